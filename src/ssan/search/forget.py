"""Erasure: removing tracks (or images) from an index for good, and recording it in the audit log.

:func:`forget` removes the selected entries' vectors (the FAISS index is rebuilt over the
rest; a trained IVF-PQ keeps its training), their rows of ``features.npy`` (a new file; the
old one is deleted once the new ``meta.json`` is in place), their crops in ``crops/`` and
the entries themselves, which carry the clip references (video path, frames, boxes). The
recall query sample is dropped when it was made of gallery vectors. A source whose tracks
were forgotten stays listed with ``"forgotten"`` set, so ``ssan index --add`` does not index
it again (``--overwrite`` rebuilds everything). The rewrite holds ``INDEX/.lock`` and replaces
``meta.json`` atomically, so a running ``ssan serve`` sees the old index or the new one
(:class:`ssan.search.Searcher` reloads on change). Row numbers, the ids of the service,
shift after an erasure.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

from ssan._time import iso
from ssan.errors import SsanError
from ssan.search import ann
from ssan.search.filters import TrackColumns
from ssan.search.index import GalleryIndex

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"


@contextlib.contextmanager
def index_lock(directory: Path):
    """Hold the index's write lock (``INDEX/.lock``, an exclusive ``flock``) while rewriting it."""
    fd = os.open(Path(directory) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Selection:
    """What to forget: exactly one of a camera, everything seen before an instant, one track, one image."""

    camera: Optional[str] = None
    before: Optional[datetime] = None  # tracks that ended before it (a camera's too, with ``camera``)
    track: Optional[int] = None  # the id of a track result (its row)
    image: Optional[int] = None  # the id of an image result (its row)

    def describe(self) -> dict:
        chosen = {"camera": self.camera, "before": iso(self.before) if self.before else None}
        chosen.update({"track": self.track, "image": self.image})
        return {k: v for k, v in chosen.items() if v is not None}

    def mask(self, index: GalleryIndex) -> np.ndarray:
        """N booleans: the entries to forget."""
        entries = index.entries
        tracks = index.meta.get("content") == "tracks"
        chosen = np.zeros(len(entries), dtype=bool)
        for name, wanted in (("track", True), ("image", False)):
            row = getattr(self, name)
            if row is not None:
                if tracks != wanted:
                    raise SsanError(f"--{name} {row}: this index holds {'tracks' if tracks else 'images'}")
                if not 0 <= row < len(entries):
                    raise SsanError(f"--{name} {row}: no such id (the index holds {len(entries)})")
                chosen[row] = True
                return chosen
        columns = TrackColumns.of(entries)
        chosen[:] = True
        if self.camera is not None:
            chosen &= columns.cameras == self.camera
        if self.before is not None:
            chosen &= columns.ends < self.before.timestamp()  # NaN (no wall-clock time) is never before
        return chosen


def _kept_faiss(index: GalleryIndex, kept: np.ndarray):
    """A FAISS index over the kept vectors: IVF-PQ keeps its trained quantizers, the others are rebuilt."""
    if index.kind == "ivfpq":
        faiss = ann.faiss_module()
        fresh = faiss.clone_index(index.faiss_index)
        fresh.reset()
        if len(kept):
            fresh.add(np.ascontiguousarray(kept, dtype=np.float32))
        return fresh
    return ann.build(kept, index.spec)[0] if index.kind != "flat" else None


def _mark_sources(meta: dict, gone: list, when: str) -> None:
    counts: dict = {}
    for entry in gone:
        counts[entry.get("video")] = counts.get(entry.get("video"), 0) + 1
    for source in meta.get("sources", []):
        if source.get("path") in counts:
            earlier = source.get("forgotten") or {"tracks": 0}
            source["forgotten"] = {"time": when, "tracks": earlier["tracks"] + counts[source["path"]]}


def _remove_crops(directory: Path, gone: list) -> int:
    crops = (directory / "crops").resolve()
    removed = 0
    for entry in gone:
        path = Path(entry["path"])
        if entry.get("kind") == "track" and path.parent == crops and path.is_file():
            path.unlink()
            removed += 1
    return removed


def forget(directory, selection: Selection, who: str = "ssan forget", audit=None, quiet_if_none: bool = False) -> dict:
    """Remove the entries ``selection`` picks from the index in ``directory``; one audit line says so.

    Args:
        audit: an :class:`ssan.search.audit.AuditLog` (None: no line; the CLI always gives one).
        quiet_if_none: write no audit line when nothing matched (scheduled retention passes).
    Returns:
        ``{"items": entries removed, "crops": crop files removed, "left": entries left}``.
    """
    directory = Path(directory)
    with index_lock(directory):
        index = GalleryIndex.load(directory)
        chosen = selection.mask(index)
        gone = [e for e, out in zip(index.entries, chosen) if out]
        report = {"items": len(gone), "crops": 0, "left": len(index) - len(gone)}
        if gone:
            _rewrite(directory, index, chosen, gone)
            report["crops"] = _remove_crops(directory, gone)
    if audit is not None and (gone or not quiet_if_none):
        audit.write(
            {"time": iso(datetime.now().astimezone()), "user": getpass.getuser(), "command": who}
            | {"index": str(directory), "forgotten": selection.describe(), **report}
        )
    if gone or not quiet_if_none:
        log.info(
            "%s: forgot %d item(s) (%d crop file(s)); %d left",
            directory,
            report["items"],
            report["crops"],
            report["left"],
        )
    return report


def _rewrite(directory: Path, index: GalleryIndex, chosen: np.ndarray, gone: list) -> None:
    keep = np.flatnonzero(~chosen)
    kept = np.asarray(index.features[keep], dtype=np.float32).reshape(len(keep), index.layout["dim"])
    meta = {**index.meta, "entries": [index.entries[i] for i in keep]}
    _mark_sources(meta, gone, iso(datetime.now().astimezone()))
    queries = index.queries
    if meta["index"].get("recall_queries") == "images":  # gallery vectors, some perhaps forgotten
        queries = None
        meta["index"] = {**meta["index"], "recall_queries": None}
    GalleryIndex(meta, kept, _kept_faiss(index, kept), queries).save(directory)
