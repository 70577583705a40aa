"""Where tracks live: one store interface (add, search with filters, forget, iterate), chosen by location.

:func:`open_store` takes a folder (the embedded FAISS index of :mod:`ssan.search.index`)
or a ``postgresql://`` URL (:class:`ssan.search.pgstore.PostgresStore`, PostgreSQL with
pgvector, shared by many services). Every store
offers the same four operations, so ``ssan watch``, ``ssan forget`` and retention are
written once against :class:`TrackStore`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Protocol

import numpy as np

from ssan.errors import SsanError
from ssan.search import ann
from ssan.search.filters import TrackColumns, TrackFilter
from ssan.search.forget import Selection, forget, index_lock
from ssan.search.index import META_FILE, GalleryIndex


class TrackStore(Protocol):
    def add(self, entries: list, vectors: np.ndarray, sources: list, new_meta: dict) -> int: ...

    def search(self, queries: np.ndarray, k: int, filters: Optional[TrackFilter] = None): ...

    def forget(self, selection: Selection, who: str, audit=None, quiet_if_none: bool = False) -> dict: ...

    def entries(self) -> Iterator[dict]: ...


class FolderStore:
    """The FAISS index folder as a :class:`TrackStore`; every write holds the folder's lock and is atomic."""

    def __init__(self, directory):
        self.directory = Path(directory)

    def exists(self) -> bool:
        return (self.directory / META_FILE).is_file()

    def load(self) -> GalleryIndex:
        return GalleryIndex.load(self.directory)

    def add(self, entries: list, vectors: np.ndarray, sources: list, new_meta: dict) -> int:
        """Append tracks (``entries`` and their N x F ``vectors``) and update ``sources`` records by path.

        ``new_meta`` is the metadata of a new index (used only when the folder holds none yet).
        Returns the number of entries after the write.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with index_lock(self.directory):
            old = self.load() if self.exists() else None
            meta = dict(old.meta) if old is not None else dict(new_meta)
            base = np.asarray(old.features, dtype=np.float32) if old is not None else np.zeros((0, vectors.shape[1]))
            features = np.concatenate([base, vectors]).astype(np.float32)
            by_path = {s.get("path"): s for s in meta.get("sources", [])}
            by_path.update({s["path"]: s for s in sources})
            meta.update({"entries": meta.get("entries", []) + list(entries), "sources": list(by_path.values())})
            GalleryIndex(meta, features, _extended(old, vectors, features)).save(self.directory)
            return len(features)

    def search(self, queries: np.ndarray, k: int, filters: Optional[TrackFilter] = None):
        index = self.load()
        rows = TrackColumns.of(index.entries).rows(filters) if filters else None
        return index.search(queries, k, rows=rows)

    def forget(self, selection: Selection, who: str = "ssan forget", audit=None, quiet_if_none: bool = False) -> dict:
        return forget(self.directory, selection, who=who, audit=audit, quiet_if_none=quiet_if_none)

    def entries(self) -> Iterator[dict]:
        yield from self.load().entries


def _extended(old: Optional[GalleryIndex], vectors: np.ndarray, features: np.ndarray):
    """The FAISS index over ``features``: a trained IVF-PQ gets the new vectors added, the rest are rebuilt."""
    if old is not None and old.kind == "ivfpq":
        faiss = ann.faiss_module()
        grown = faiss.clone_index(old.faiss_index)
        grown.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return grown
    return None  # GalleryIndex builds flat and HNSW from the features


def open_store(location):
    """The store at ``location``: a folder path (or ``file://`` URL) or a ``postgresql://`` URL.

    A store URL may end in ``ssan_search=exact`` (e.g. ``postgresql://host/db?ssan_search=exact``):
    every search then scans all vectors instead of the HNSW graph.

    Other URLs are refused by name.
    """
    text = str(location)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        if scheme in ("postgresql", "postgres"):
            from ssan.search.pgstore import PostgresStore

            return PostgresStore.from_url(text)
        if scheme != "file":
            raise SsanError(f"no track store for {scheme}:// URLs: give an index folder or a postgresql:// URL")
        text = text.split("://", 1)[1]
    return FolderStore(text)


def is_url(location) -> bool:
    """True for a server store's URL (``postgresql://...``), False for a folder (or ``file://``)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")
