"""What a :class:`ssan.search.Searcher` searches: an index folder, or a server store seen as one.

:func:`load_index` opens a folder as a :class:`ssan.search.index.GalleryIndex` and a
``postgresql://`` URL as a :class:`StoreIndex`, which offers the same surface (``meta``,
``entries[id]``, ``len``, ``search``, ``check_fingerprint``, ``image_file``) over
:class:`ssan.search.pgstore.PostgresStore`: entries are read by id when asked for, never all
at once, and camera/time filters run inside the database's query.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ssan.search.errors import GalleryIndexError
from ssan.search.filters import TrackFilter
from ssan.search.index import GalleryIndex, read_meta
from ssan.search.store import is_url, open_store


class _Entries:
    """The store's entries as a read-only sequence: those of recent results are at hand, others one query each."""

    KEEP = 4096  # entries of recent results kept at hand (the cache is dropped whole beyond it)

    def __init__(self, store):
        self.store = store
        self.recent: dict = {}

    def prefetch(self, rows: np.ndarray) -> None:
        wanted = [int(r) for r in np.unique(rows) if r >= 0]  # all of them: read just after the search
        if len(self.recent) + len(wanted) > self.KEEP:
            self.recent = {}
        if wanted:
            self.recent.update(self.store.entries_at(wanted))

    def __len__(self) -> int:
        return self.store.count()

    def __getitem__(self, pos: int) -> dict:
        if not isinstance(pos, (int, np.integer)) or pos < 0:
            raise IndexError(pos)
        entry = self.recent.get(int(pos)) or self.store.entry(pos)
        if entry is None:
            raise IndexError(pos)
        return entry

    def __iter__(self) -> Iterator[dict]:
        return iter(self.store.entries())


class StoreIndex:
    """A server store with the :class:`GalleryIndex` surface a searcher uses."""

    kind, layout, fingerprint = GalleryIndex.kind, GalleryIndex.layout, GalleryIndex.fingerprint  # from meta
    check_fingerprint, image_file = GalleryIndex.check_fingerprint, GalleryIndex.image_file

    def __init__(self, store):
        self.store = store
        self.meta = store.meta()
        self.entries = _Entries(store)

    def __len__(self) -> int:
        return self.store.count()

    def __repr__(self) -> str:
        return f"StoreIndex({self.store!r}, kind={self.kind}, dim={self.layout['dim']})"

    def search(self, queries: np.ndarray, k: int, filters: Optional[TrackFilter] = None):
        queries = np.atleast_2d(queries)
        if queries.shape[1] != self.layout["dim"]:
            raise GalleryIndexError(f"query vectors are {queries.shape[1]} wide, the index holds {self.layout['dim']}")
        scores, rows = self.store.search(queries, k, filters)
        self.entries.prefetch(rows)  # the results' entries in one query, not one each
        return scores, rows

    def cameras(self) -> list:
        return sorted(self.store.cameras())


def load_index(location):
    """The index at ``location``: a :class:`GalleryIndex` (folder) or a :class:`StoreIndex` (URL)."""
    if is_url(location):
        return StoreIndex(open_store(location))
    return GalleryIndex.load(Path(location))


def read_index_meta(location) -> dict:
    """The metadata of the index at ``location`` (a folder's ``meta.json``, or a store's, without entries)."""
    if is_url(location):
        return open_store(location).meta()
    return read_meta(Path(location))


def stamp(location) -> tuple:
    """What changes when the index at ``location`` is rewritten (a folder's meta.json, a store's generation)."""
    if is_url(location):
        return open_store(location).stamp()
    try:
        info = (Path(location) / "meta.json").stat()
    except OSError:
        return ()
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def publish(index: GalleryIndex, location) -> int:
    """Add the tracks of a folder index whose sources the store at ``location`` lacks; returns how many.

    The crops stay where the folder keeps them (the entries record their paths); the store takes
    the entries, vectors and source records, refusing vectors of another checkpoint.
    """
    store = open_store(location)
    known = set()
    if store.exists():
        StoreIndex(store).check_fingerprint(index.fingerprint, f"the index being published ({index!r})")
        known = {s["path"] for s in store.meta()["sources"]}
    rows = [i for i, e in enumerate(index.entries) if e.get("video") not in known]
    sources = [s for s in index.meta.get("sources", []) if s.get("path") not in known]
    vectors = np.asarray(index.features, dtype=np.float32)[rows].reshape(len(rows), index.layout["dim"])
    store.add([index.entries[i] for i in rows], vectors, sources, index.meta)
    return len(rows)
