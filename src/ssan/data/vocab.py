"""Caption tokenizer and word vocabulary.

The tokenizer reproduces the datasets' ``processed_tokens``: lower case,
apostrophes removed (``He's`` -> ``hes``), every other character that is not a
letter or a digit separates words (``shirt.His`` -> ``shirt``, ``his``).
Text is first put in Unicode NFKC form, so composed and decomposed accents,
full-width letters and ligatures give the same words.

A :class:`Vocabulary` is a list of words whose position is the token id.
Id 0 is always ``<pad>``. When the word ``<unk>`` is present (id 1, written
by ``prepare --keep-unknown``) unknown words map to it; otherwise unknown words
are dropped, as the reference implementation does.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from ssan.errors import DataError

PAD = "<pad>"
UNK = "<unk>"
APOSTROPHES = "'\u2019\u2018\u02bc"  # ' ’ ‘ ʼ
_APOSTROPHE_TABLE = str.maketrans("", "", APOSTROPHES)
_WORD = re.compile(r"[^\W_]+")  # runs of Unicode letters/digits (underscore separates)
_COMPOUND = re.compile(r"[^\W_]+(?:-[^\W_]+)*")  # the same, joined by single hyphens ("t-shirt")


def tokenize(text: str, keep_hyphens: bool = False) -> List[str]:
    """Split a caption into lower-case words.

    Args:
        text: any string.
        keep_hyphens: keep hyphenated compounds whole (``t-shirt``), as the datasets'
            ``processed_tokens`` do; by default a hyphen separates words.
    Returns:
        the words, in order; ``[]`` when the text holds no letter or digit.
    """
    if not isinstance(text, str):
        raise TypeError(f"tokenize expects a string, got {type(text).__name__}")
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHE_TABLE)
    return (_COMPOUND if keep_hyphens else _WORD).findall(text)


def normalize_tokens(tokens: Iterable[str]) -> List[str]:
    """Re-tokenize pre-split tokens so they match :func:`tokenize` (``"T-shirt"`` -> ``t``, ``shirt``)."""
    words: List[str] = []
    for token in tokens:
        words.extend(tokenize(token))
    return words


class Vocabulary:
    """Word <-> id mapping; ``words[0]`` must be ``<pad>``.

    Args:
        words: the words in id order, unique, starting with ``<pad>``.
    """

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if not words or words[0] != PAD:
            raise DataError(f"a vocabulary must start with {PAD!r}")
        index = {}
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word:
                raise DataError(f"vocabulary entry {i} is not a non-empty string: {word!r}")
            if word in index:
                raise DataError(f"vocabulary word {word!r} appears twice (ids {index[word]} and {i})")
            index[word] = i
        self._words = words
        self._index = index
        self.unk_id: Optional[int] = index.get(UNK)

    @classmethod
    def build(cls, captions: Iterable[Sequence[str]], min_count: int = 2, unknown: bool = False) -> Vocabulary:
        """Vocabulary of the words seen at least ``min_count`` times.

        Args:
            captions: token lists (already tokenized).
            min_count: minimum number of occurrences to keep a word.
            unknown: reserve id 1 for ``<unk>`` (unknown words then map to it).
        Words are ordered by decreasing count, ties alphabetically, so the
        result does not depend on the order of the captions.
        """
        counts = Counter(word for tokens in captions for word in tokens)
        specials = [PAD, UNK] if unknown else [PAD]
        kept = [w for w, c in counts.items() if c >= min_count and w not in specials]
        kept.sort(key=lambda w: (-counts[w], w))
        return cls(specials + kept)

    def __len__(self) -> int:
        return len(self._words)

    def __contains__(self, word: object) -> bool:
        return word in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._words == other._words

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} words, unk={'yes' if self.unk_id is not None else 'no'})"

    def word(self, token_id: int) -> str:
        return self._words[token_id]

    def id(self, word: str) -> Optional[int]:
        return self._index.get(word)

    def encode_tokens(self, tokens: Iterable[str]) -> Tuple[List[int], List[str]]:
        """Ids of known words; returns ``(ids, unknown_words)``.

        Unknown words are dropped, or mapped to ``<unk>`` when the vocabulary has it;
        either way they are listed in ``unknown_words`` (in order, with repeats).
        """
        ids: List[int] = []
        unknown: List[str] = []
        for word in tokens:
            token_id = self._index.get(word)
            if token_id is None or token_id == 0:
                unknown.append(word)
                if self.unk_id is None:
                    continue
                token_id = self.unk_id
            ids.append(token_id)
        return ids, unknown

    def words_of(self, text: str) -> List[str]:
        """The words of free text as this vocabulary knows them.

        Hyphenated compounds (``t-shirt``) stay whole when the vocabulary has them (datasets'
        ``processed_tokens`` keep them whole) and are split into their parts otherwise.
        """
        words: List[str] = []
        for word in tokenize(text, keep_hyphens=True):
            if "-" in word and word not in self._index:
                words.extend(word.split("-"))
            else:
                words.append(word)
        return words

    def encode(self, text: str) -> Tuple[List[int], List[str]]:
        """:meth:`words_of` ``text``, then :meth:`encode_tokens` them."""
        return self.encode_tokens(self.words_of(text))

    def truncate(self, ids: Sequence[int], max_length: int) -> List[int]:
        """``ids`` cut to ``max_length`` (the interface of :class:`ssan.data.tokenizers.ClipTokenizer`)."""
        return list(ids)[:max_length]

    def decode(self, ids: Iterable[int]) -> List[str]:
        """Words of the ids, padding skipped."""
        return [self._words[int(i)] for i in ids if int(i) != 0]

    def to_list(self) -> List[str]:
        return list(self._words)

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_text(json.dumps({"words": self._words}, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Union[str, Path]) -> Vocabulary:
        """Read a ``vocab.json`` (``{"words": [...]}``); DataError naming the file on any problem."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"cannot read vocabulary {path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise DataError(f"{path}: expected an object with a 'words' list")
        try:
            return cls(data["words"])
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
