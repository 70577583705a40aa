"""Tokenisation per text encoder: the prepared vocabulary (``lstm``) or CLIP's byte-pair encoding (``clip``).

:func:`model_tokenizer` gives the tokenizer of a model's architecture: the
:class:`ssan.data.Vocabulary` itself for the Bi-LSTM, a :class:`ClipTokenizer` for the CLIP text
transformer. A :class:`ClipTokenizer` has the vocabulary's interface (``words_of``,
``encode_tokens``, ``encode``, ``decode``, ``truncate``), so free-text search, the index's recall
sample and the ONNX query path use it unchanged, and :meth:`ClipTokenizer.encode_records` re-encodes
the prepared records' captions (training pairs, evaluation queries): nothing is prepared again.

CLIP's ids: ``<start_of_text>``, the caption's byte-pair pieces, ``<end_of_text>``; captions
longer than the context (77) are cut with the end token kept last, as open_clip does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

log = logging.getLogger(__name__)

CLIP_CONTEXT = 77


class ClipTokenizer:
    """CLIP's BPE (:mod:`ssan.clip.bpe`, equal to open_clip's) with start/end ids and the vocabulary's interface.

    Args:
        context_length: most ids per caption, start and end included (CLIP: 77).
        merges_file: the gzipped merge list (None: the copy shipped inside open_clip, found without importing it).
    """

    unk_id = None  # every text has a byte-pair encoding: nothing is unknown

    def __init__(self, context_length: int = CLIP_CONTEXT, merges_file: Optional[Union[str, Path]] = None) -> None:
        from ssan.clip.bpe import ClipTokenizer as BytePairs  # torch-free: the ONNX query path needs no open_clip

        if not 3 <= context_length <= CLIP_CONTEXT:
            raise ValueError(f"a CLIP caption holds 3..{CLIP_CONTEXT} ids, got context_length={context_length}")
        self._bpe = BytePairs(merges_file, context_length=CLIP_CONTEXT)
        self.merges_file = self._bpe.merges_file
        self.context_length = context_length
        self.sot, self.eot = self._bpe.sot_id, self._bpe.eot_id

    def __len__(self) -> int:
        return len(self._bpe)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClipTokenizer) and other.context_length == self.context_length

    def __repr__(self) -> str:
        return f"ClipTokenizer(bpe, context {self.context_length})"

    def words_of(self, text: str) -> List[str]:
        """The byte-pair pieces of ``text`` (open_clip's cleaning, lower case)."""
        return [self._bpe.pieces[i] for i in self._bpe.encode(text)[0]]

    def encode_tokens(self, pieces: Iterable[str]) -> Tuple[List[int], List[str]]:
        """(start + piece ids + end, unknown pieces); not cut (see :meth:`truncate`)."""
        pieces = list(pieces)
        unknown = [p for p in pieces if p not in self._bpe.ids]
        ids = [self._bpe.ids[p] for p in pieces if p in self._bpe.ids]
        return [self.sot, *ids, self.eot], unknown

    def truncate(self, ids: Sequence[int], max_length: int) -> List[int]:
        """``ids`` cut to ``min(max_length, context_length)``, the end token kept last."""
        limit = min(max_length, self.context_length)
        ids = list(ids)
        return ids if len(ids) <= limit else ids[: limit - 1] + [self.eot]

    def encode(self, text: str) -> Tuple[List[int], List[str]]:
        """The ids of ``text``, cut to the context."""
        ids, unknown = self.encode_tokens(self.words_of(text))
        return self.truncate(ids, self.context_length), unknown

    def decode(self, ids: Iterable[int]) -> List[str]:
        """One readable piece per id (start and end included, so it lines up with per-token attention)."""
        return [self._bpe.pieces[int(i)].replace("</w>", "") for i in ids if int(i) != 0]

    def encode_records(self, records: Sequence[dict], max_length: Optional[int] = None) -> List[dict]:
        """Prepared records with ``tokens`` re-encoded from their ``captions`` (cuts counted in the log).

        Each caption keeps at most ``max_length`` ids (None: the context), the end token last.
        """
        limit = min(max_length or self.context_length, self.context_length)
        out, cut = [], 0
        for record in records:
            tokens = []
            for caption in record["captions"]:
                ids, _ = self.encode_tokens(self.words_of(caption))
                cut += len(ids) > limit
                tokens.append(self.truncate(ids, limit))
            out.append({**record, "tokens": tokens})
        if cut:
            log.info(
                "%d caption(s) longer than CLIP's %d-token context were cut (end token kept)", cut, self.context_length
            )
        return out


def model_tokenizer(arch: dict, vocab, max_length: int = CLIP_CONTEXT, merges_file=None):
    """The tokenizer of a model of ``arch`` (``SSAN.arch``): ``vocab`` itself, or a :class:`ClipTokenizer`.

    ``merges_file``: CLIP's merge list (an ONNX export's copy); None takes open_clip's packaged one.
    """
    from ssan.models.text_encoders import TEXT_ENCODERS

    kind = TEXT_ENCODERS.get(arch.get("text_encoder", "lstm")).tokenizer
    if kind == "clip":
        return ClipTokenizer(min(int(max_length), CLIP_CONTEXT), merges_file)
    return vocab
