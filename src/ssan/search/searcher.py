"""Free-text search over a gallery index: the model is loaded once, queries are cheap.

``Searcher.search`` returns plain data (JSON-ready): the ranked images with their
SSAN similarity, the words the model saw, the words it did not know, and the
word attention of each body part (the WAM scores of method section 2).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ssan.errors import SsanError
from ssan.models import flatten_features
from ssan.search.encoders import load_encoders, pad_id_lists
from ssan.search.errors import GalleryIndexError, QueryError
from ssan.search.filters import TrackColumns, TrackFilter
from ssan.search.index import GalleryIndex
from ssan.search.store import is_url
from ssan.search.store_index import load_index
from ssan.search.store_index import stamp as _stamp
from ssan.search.tracks import track_fields, video_file

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 100_000  # library guard; the web service allows far less
ONNX_SUBDIR = "onnx"


def _onnx_dir(index_dir: Path, onnx_dir) -> Path:
    folder = Path(onnx_dir) if onnx_dir is not None else index_dir / ONNX_SUBDIR
    if not (folder / "meta.json").is_file():
        raise GalleryIndexError(
            f"no ONNX export in {folder}; create it with `ssan export --checkpoint CKPT --out {folder}`"
        )
    return folder


class Searcher:
    """Search an index with text.

    Args:
        index_dir: a folder written by ``ssan index``.
        backend: ``torch`` (the checkpoint recorded in the index, or ``checkpoint``) or ``onnx``
            (the export in ``onnx_dir``, default ``index_dir/onnx``).
        device: torch device for the torch backend (``cuda`` selects the CUDA provider for onnx).
        checkpoint: use this checkpoint instead of the recorded path (must have the same weights).
        onnx_dir: folder written by ``ssan export``.
        threads: if given, the number of CPU threads torch, FAISS (process-wide settings) and
            onnxruntime use.
            Queries are small: one thread avoids costly thread hand-offs on busy machines.
    """

    def __init__(
        self,
        index_dir: Union[str, Path],
        backend: str = "torch",
        device: str = "cpu",
        checkpoint: Optional[Union[str, Path]] = None,
        onnx_dir: Optional[Union[str, Path]] = None,
        threads: Optional[int] = None,
    ):
        if threads is not None:
            set_threads(threads)
        index_dir = index_dir if is_url(index_dir) else Path(index_dir)
        self.index_dir = index_dir  # a folder, or a server store's URL
        self._stamp = _stamp(index_dir)
        self.index = load_index(index_dir)
        self.generation = 0  # counts reloads (:meth:`refresh`): row ids of one generation mean nothing in another
        if backend == "onnx":
            onnx_dir = _onnx_dir(index_dir, onnx_dir)
        checkpoint = checkpoint if checkpoint is not None else self.index.meta["checkpoint"]
        self.encoders, self.info = load_encoders(
            backend, checkpoint=checkpoint, onnx_dir=onnx_dir, device=device, threads=threads
        )
        source = f"checkpoint {self.info.checkpoint}" if backend == "torch" else f"ONNX export {onnx_dir}"
        self.index.check_fingerprint(self.info.fingerprint, source)
        self.backend = backend
        self.max_length = int(self.index.meta["encode"]["max_length"])
        self._lock = threading.Lock()
        self._columns = None  # (index, TrackColumns of its entries), built on the first filtered search
        log.debug("loaded %r with %s encoders", self.index, backend)

    def parse_query(self, query: str) -> dict:
        """Words of the query: ``{"ids", "tokens", "unknown_words", "truncated"}``; QueryError when unusable."""
        if not isinstance(query, str):
            raise QueryError(f"the query must be text, got {type(query).__name__}")
        if len(query) > MAX_QUERY_CHARS:
            raise QueryError(f"the query is too long ({len(query)} characters; at most {MAX_QUERY_CHARS})")
        if not query.strip():
            raise QueryError("the query is empty: describe the person you are looking for")
        words = self.info.vocab.words_of(query)
        if not words:
            raise QueryError("the query has no words (letters or digits) the model could read")
        vocab = self.info.vocab
        ids, unknown = vocab.encode_tokens(words)
        if not ids or (vocab.unk_id is not None and all(i == vocab.unk_id for i in ids)):
            words = sorted(set(unknown))
            listing = ", ".join(w if len(w) <= 30 else w[:30] + "..." for w in words[:10])
            if len(words) > 10:
                listing += f", and {len(words) - 10} more"
            raise QueryError(f"none of the query's words are in the model's vocabulary ({listing})")
        truncated = len(ids) > self.max_length
        ids = vocab.truncate(ids, self.max_length)
        return {"ids": ids, "tokens": vocab.decode(ids), "unknown_words": unknown, "truncated": truncated}

    def _encode(self, ids: list):
        tokens, lengths = pad_id_lists([ids], self.max_length)
        feats = self.encoders.text(tokens, lengths)
        attention = feats.pop("attention", None)
        vector = flatten_features(feats).numpy().astype(np.float32, copy=False)
        return vector, (attention[0, : len(ids)].numpy() if attention is not None else None)

    def refresh(self) -> bool:
        """Reload the index when its ``meta.json`` was replaced (an erasure, tracks appended); True if reloaded.

        The folder is written so that ``meta.json`` is replaced last: the loaded index is the old
        one or the new one, whole. A reload that fails (a write caught between two files) keeps
        the index being served and is tried again on the next call.
        """
        stamp = _stamp(self.index_dir)
        if stamp == self._stamp:
            return False
        try:
            index = load_index(self.index_dir)
            index.check_fingerprint(self.info.fingerprint, "the encoders being served")
        except GalleryIndexError as exc:
            log.warning("index %s changed but cannot be reloaded yet: %s", self.index_dir, exc)
            return False
        with self._lock:
            self.index, self._stamp, self._columns = index, stamp, None
            self.generation += 1
        log.info("reloaded %s: %d entries", self.index_dir, len(index))
        return True

    def rows(self, filters: Optional[TrackFilter]) -> Optional[np.ndarray]:
        """The row numbers ``filters`` keeps (None: no filter, every row)."""
        if not filters:
            return None
        if self._columns is None or self._columns[0] is not self.index:
            self._columns = (self.index, TrackColumns.of(self.index.entries))
        return self._columns[1].rows(filters)

    def _nearest(self, vector: np.ndarray, k: int, filters: Optional[TrackFilter]):
        if isinstance(self.index, GalleryIndex):
            return self.index.search(vector, k, rows=self.rows(filters))
        return self.index.search(vector, k, filters)  # a server store filters inside its own query

    def search(self, query: str, k: int = 10, filters: Optional[TrackFilter] = None) -> dict:
        """Rank the gallery against ``query`` (among the tracks ``filters`` keeps, when given).

        Returns:
            ``{"query", "k", "results": [{"rank", "image_id", "score", "path", "name", "id"}],
            "tokens", "unknown_words", "truncated", "attention": {"part_1": [[word, weight], ...]}}``
            (``attention`` is empty for a global-only model).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}")
        parsed = self.parse_query(query)
        self.refresh()
        with self._lock:  # one model call at a time: encoders and FAISS are shared by every thread
            vector, attention = self._encode(parsed["ids"])
            scores, rows = self._nearest(vector, int(k), filters)
        results = []
        for rank, (score, row) in enumerate(zip(scores[0].tolist(), rows[0].tolist()), start=1):
            if row < 0:
                continue
            entry = self.index.entries[row]
            results.append(
                {
                    "rank": rank,
                    "image_id": int(row),
                    "score": float(score),
                    "path": entry["path"],
                    "name": entry.get("name") or Path(entry["path"]).name,
                    "id": entry.get("id"),
                    **track_fields(entry),
                }
            )
        return {
            "query": query,
            "k": int(k),
            "results": results,
            "tokens": parsed["tokens"],
            "unknown_words": parsed["unknown_words"],
            "truncated": parsed["truncated"],
            "attention": attention_by_part(parsed["tokens"], attention),
        }

    def image_file(self, image_id: int) -> Optional[Path]:
        """File of an indexed image by id (None when unknown or unsafe); see GalleryIndex.image_file."""
        self.refresh()
        return self.index.image_file(image_id)

    def video_file(self, image_id: int) -> Optional[Path]:
        """Video file of an indexed track by id (None for images, frame folders, unknown or unsafe ids)."""
        self.refresh()
        if not isinstance(image_id, int) or not 0 <= image_id < len(self.index):
            return None
        return video_file(self.index.entries[image_id])

    def track(self, image_id: int) -> Optional[dict]:
        """The track fields of track ``image_id`` (:func:`track_fields`); None for images and unknown ids."""
        self.refresh()
        if not isinstance(image_id, int) or not 0 <= image_id < len(self.index):
            return None
        return track_fields(self.index.entries[image_id]) or None

    def cameras(self) -> list:
        """The camera names of the indexed tracks, sorted."""
        if not isinstance(self.index, GalleryIndex):
            return self.index.cameras()
        return sorted({e["camera"] for e in self.index.entries if e.get("camera") is not None})

    def _identities(self) -> bool:
        if isinstance(self.index, GalleryIndex):
            return any(e.get("id") is not None for e in self.index.entries)
        return self.index.store.has_identities()  # one query, not a read of every entry

    def describe(self) -> dict:
        """What is being served (for health checks)."""
        return {
            "images": len(self.index),
            "kind": self.index.kind,
            "backend": self.backend,
            "fingerprint": self.index.fingerprint,
            "identities": self._identities(),
            "tracks": self.index.meta.get("content") == "tracks",
        }


def set_threads(threads: int) -> None:
    """Use ``threads`` CPU threads in torch and FAISS (process-wide)."""
    import torch

    from ssan.search.ann import faiss_module

    if threads < 1:
        raise SsanError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    faiss_module().omp_set_num_threads(threads)


def attention_by_part(words: list, attention: Optional[np.ndarray]) -> dict:
    """``{"part_1": [[word, weight], ...], ...}`` from an L x K attention array (None: ``{}``)."""
    if attention is None:
        return {}
    return {
        f"part_{k + 1}": [[word, round(float(attention[i, k]), 4)] for i, word in enumerate(words)]
        for k in range(attention.shape[1])
    }


def top_words(attention: dict, count: int = 3) -> dict:
    """The ``count`` most attended words of each part: ``{"part_1": [(word, weight), ...]}``."""
    return {
        part: sorted(((w, s) for w, s in pairs), key=lambda item: -item[1])[:count] for part, pairs in attention.items()
    }
