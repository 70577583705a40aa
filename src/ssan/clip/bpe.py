"""CLIP's byte-pair-encoding tokenizer without torch or open_clip (the ONNX query path).

Reads OpenAI's merge list (``bpe_simple_vocab_16e6.txt.gz``, shipped inside open_clip and copied
into every ``ssan export`` of a CLIP checkpoint) and produces the ids of open_clip's
``SimpleTokenizer`` (tested equal): text cleaned with ftfy, HTML entities resolved, whitespace
collapsed, lower-cased; split into words, letters and punctuation runs; each piece's UTF-8
bytes mapped to printable characters and merged by rank.

With the Vocabulary interface that search uses (``words_of``, ``encode_tokens``, ``encode``,
``decode``, ``unk_id``): ids exclude the start and end tokens, which the CLIP text encoder adds
(:class:`ssan.clip.model.ClipRetrieval`), so a cut at ``max_length`` = context - 2 pieces keeps
the end token last, as open_clip's truncation does.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from ssan._extras import require

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2
SPECIAL = ("<start_of_text>", "<end_of_text>")
END_OF_WORD = "</w>"


def packaged_merges() -> Path:
    """open_clip's copy of the merge list, found without importing open_clip (or torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        require("open_clip", "CLIP's tokenizer file comes with open_clip", "clip")  # raises the extra's error
    return Path(spec.origin).parent / BPE_FILE


@functools.lru_cache(maxsize=1)
def byte_characters() -> Dict[int, str]:
    """Every byte -> one printable character (printable Latin-1 bytes map to themselves, first)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in keep}  # order matters: it is the order of the first 256 ids
    others = [byte for byte in range(256) if byte not in table]
    table.update({byte: chr(256 + n) for n, byte in enumerate(others)})
    return table


def _pairs(symbols: Tuple[str, ...]) -> set:
    return {(a, b) for a, b in zip(symbols, symbols[1:])}


class ClipTokenizer:
    """OpenAI CLIP's BPE (open_clip's ``SimpleTokenizer`` with ``clean="lower"``).

    Args:
        merges_file: the gzipped merge list (None: open_clip's packaged copy).
        context_length: the text encoder's sequence length (77), start and end tokens included.
    """

    unk_id = None  # every text has an encoding: nothing is unknown

    def __init__(self, merges_file: Optional[Union[str, Path]] = None, context_length: int = 77):
        self.regex = require("regex", "CLIP's tokenizer needs the regex package", "clip")
        self.ftfy = require("ftfy", "CLIP's tokenizer needs ftfy", "clip")
        self.merges_file = Path(merges_file) if merges_file is not None else packaged_merges()
        lines = gzip.open(self.merges_file).read().decode("utf-8").split("\n")[1 : NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        chars = list(byte_characters().values())
        pieces = chars + [c + END_OF_WORD for c in chars] + ["".join(m) for m in merges] + list(SPECIAL)
        self.ids = {piece: i for i, piece in enumerate(pieces)}
        self.pieces = pieces
        self.ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.sot_id, self.eot_id = self.ids[SPECIAL[0]], self.ids[SPECIAL[1]]
        self.context_length = context_length
        self.max_length = context_length - 2  # pieces between the start and end tokens
        special = "|".join(SPECIAL)
        pattern = special + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        self.pattern = self.regex.compile(pattern, self.regex.IGNORECASE)
        self._cache: Dict[str, List[str]] = {s: [s] for s in SPECIAL}
        self._bytes = byte_characters()
        self._unbytes = {c: b for b, c in self._bytes.items()}

    def __len__(self) -> int:
        return len(self.pieces)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClipTokenizer) and other.pieces == self.pieces

    def __repr__(self) -> str:
        return f"ClipTokenizer({len(self)} pieces, context {self.context_length})"

    def clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self.ftfy.fix_text(text))).strip()
        return " ".join(text.split()).lower()

    def words_of(self, text: str) -> List[str]:
        """The pieces the text splits into before merging (words, single digits, punctuation runs)."""
        return self.pattern.findall(self.clean(text))

    def merge(self, word: str) -> List[str]:
        """One word (already byte-mapped) merged into its vocabulary pieces."""
        if word in self._cache:
            return self._cache[word]
        symbols = tuple(word[:-1]) + (word[-1] + END_OF_WORD,)
        while len(symbols) > 1:
            best = min(_pairs(symbols), key=lambda pair: self.ranks.get(pair, NUM_MERGES))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = tuple(merged)
        self._cache[word] = list(symbols)
        return self._cache[word]

    def encode_tokens(self, words: Iterable[str]) -> Tuple[List[int], List[str]]:
        """(ids of the words' pieces, no unknown words)."""
        ids = []
        for word in words:
            mapped = word if word in SPECIAL else "".join(self._bytes[b] for b in word.encode("utf-8"))
            ids.extend(self.ids[piece] for piece in self.merge(mapped))
        return ids, []

    def encode(self, text: str) -> Tuple[List[int], List[str]]:
        """(piece ids of ``text`` without start/end tokens, [])."""
        return self.encode_tokens(self.words_of(text))

    def truncate(self, ids: Iterable[int], max_length: int) -> List[int]:
        """``ids`` cut to ``max_length`` pieces (the start and end tokens come later: nothing to keep)."""
        return list(ids)[:max_length]

    def decode(self, ids: Iterable[int]) -> List[str]:
        """The readable piece of each id (end-of-word marks dropped)."""
        out = []
        for i in ids:
            piece = self.pieces[int(i)]
            raw = piece if piece in SPECIAL else bytes(self._unbytes[c] for c in piece.replace(END_OF_WORD, ""))
            out.append(raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace"))
        return out

    def to_list(self) -> List[str]:
        """Nothing: CLIP's pieces come from the merge file, not from a word list."""
        return []

    def encode_records(self, records: List[dict], max_length: int) -> List[dict]:
        """Prepared records with each caption's ``tokens`` re-encoded from its text (cut to ``max_length``)."""
        return [
            {**record, "tokens": [self.encode(caption)[0][:max_length] for caption in record["captions"]]}
            for record in records
        ]

    def with_ends(self, ids: List[int]) -> List[int]:
        """``[start] + ids[:max_length] + [end]``: the context open_clip's tokenizer builds."""
        return [self.sot_id, *list(ids)[: self.max_length], self.eot_id]


def export_tokenizer(onnx_dir: Union[str, Path], meta: dict) -> ClipTokenizer:
    """The tokenizer of an ``ssan export`` folder of a CLIP checkpoint (its copy of the merge list)."""
    from ssan.errors import SsanError

    spec = meta["tokenizer"]
    if not isinstance(spec, dict) or spec.get("kind") != "clip-bpe" or not isinstance(spec.get("file"), str):
        raise SsanError(f"ONNX export {onnx_dir}: unknown tokenizer {spec!r}")
    path = Path(onnx_dir) / Path(spec["file"]).name
    if not path.is_file():
        raise SsanError(f"ONNX export {onnx_dir} lacks its tokenizer file {path.name}; export it again")
    return ClipTokenizer(path, context_length=int(spec.get("context_length", 77)))
