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
from typing import Iterable, List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

CLIP_CONTEXT = 77


class ClipTokenizer:
    """open_clip's BPE tokenizer (shipped inside the package: works offline) with the vocabulary's interface.

    Args:
        context_length: most ids per caption, start and end included (CLIP: 77).
    """

    unk_id = None  # every text has a byte-pair encoding: nothing is unknown

    def __init__(self, context_length: int = CLIP_CONTEXT) -> None:
        from ssan.models.clip_trunks import open_clip_module

        if not 3 <= context_length <= CLIP_CONTEXT:
            raise ValueError(f"a CLIP caption holds 3..{CLIP_CONTEXT} ids, got context_length={context_length}")
        self._bpe = open_clip_module().tokenizer.SimpleTokenizer()
        self.context_length = context_length
        self.sot, self.eot = self._bpe.sot_token_id, self._bpe.eot_token_id

    def __len__(self) -> int:
        return len(self._bpe.encoder)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClipTokenizer) and other.context_length == self.context_length

    def __repr__(self) -> str:
        return f"ClipTokenizer(bpe, context {self.context_length})"

    def words_of(self, text: str) -> List[str]:
        """The byte-pair pieces of ``text`` (open_clip's cleaning, lower case)."""
        return [self._bpe.decoder[i] for i in self._bpe.encode(text)]

    def encode_tokens(self, pieces: Iterable[str]) -> Tuple[List[int], List[str]]:
        """(start + piece ids + end, unknown pieces); not cut (see :meth:`truncate`)."""
        pieces = list(pieces)
        unknown = [p for p in pieces if p not in self._bpe.encoder]
        ids = [self._bpe.encoder[p] for p in pieces if p in self._bpe.encoder]
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
        return [self._bpe.decoder[int(i)].replace("</w>", "") for i in ids if int(i) != 0]

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


def model_tokenizer(arch: dict, vocab, max_length: int = CLIP_CONTEXT):
    """The tokenizer of a model of ``arch`` (``SSAN.arch``): ``vocab`` itself, or a :class:`ClipTokenizer`."""
    from ssan.models.text_encoders import TEXT_ENCODERS

    kind = TEXT_ENCODERS.get(arch.get("text_encoder", "lstm")).tokenizer
    if kind == "clip":
        return ClipTokenizer(min(int(max_length), CLIP_CONTEXT))
    return vocab
