"""Encoded batches kept while an index is built, so that an interrupted job continues where it stopped.

Each encoded batch goes to ``OUT/.partial/batch-NNNNNN.npz`` (written atomically, holding the
paths it encoded, their vectors and the files that could not be read) beside ``job.json``, which
names the encoders. The index itself (``meta.json`` and its data files) is written only when the
whole job completes; the folder is then removed. A rerun with the same encoders (the same
command, or ``--add``) reads the batches back and encodes only the rest; a rerun with other
encoders (another checkpoint, backend or input size) discards them and starts over.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ssan._files import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"


class EncodingJournal:
    """The batches encoded so far for the index in ``out_dir`` by the encoders described by ``key``."""

    def __init__(self, out_dir: Path, key: dict):
        self.folder = Path(out_dir) / PARTIAL_DIR
        self.key = key
        self.vectors: dict = {}  # path -> F float32 vector
        self.failed: dict = {}  # path -> why it could not be read
        self.layout: Optional[dict] = None
        self._batches = 0

    @classmethod
    def open(cls, out_dir: Path, key: dict) -> EncodingJournal:
        """The journal of ``out_dir``, with the batches of an interrupted job by the same encoders."""
        journal = cls(out_dir, key)
        journal._load()
        return journal

    def __contains__(self, path: str) -> bool:
        return path in self.vectors or path in self.failed

    def _load(self) -> None:
        job = self.folder / "job.json"
        if not job.is_file():
            return
        try:
            saved = json.loads(job.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved != self.key:
            log.info("discarding the encoded batches in %s: another checkpoint or input size made them", self.folder)
            self.remove()
            return
        for path in sorted(self.folder.glob("batch-*.npz")):
            self._read_batch(path)
        if self._batches:
            log.info(
                "continuing an interrupted job: %d image(s) already encoded (%s)",
                len(self.vectors) + len(self.failed),
                self.folder,
            )

    def _read_batch(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as data:
                paths, features = [str(p) for p in data["paths"]], np.asarray(data["features"], np.float32)
                failed = dict(zip((str(p) for p in data["failed_paths"]), (str(r) for r in data["failed_reasons"])))
                layout = json.loads(str(data["layout"])) if paths else None
        except (OSError, ValueError, KeyError) as exc:  # a damaged batch is encoded again
            log.warning("ignoring the unreadable encoded batch %s (%s)", path, exc)
            return
        self._batches = max(self._batches, int(path.stem.split("-")[1]))
        self.layout = layout or self.layout
        self.vectors.update(zip(paths, features))
        self.failed.update(failed)

    def record(self, paths: Sequence[str], features: np.ndarray, failed: Sequence[tuple], layout) -> None:
        """Keep one encoded batch: ``paths`` and their ``features`` rows, the ``failed`` (path, reason)."""
        if self._batches == 0:
            atomic_write_text(self.folder / "job.json", json.dumps(self.key, sort_keys=True))
        self._batches += 1
        buffer = io.BytesIO()
        np.savez(
            buffer,
            paths=np.asarray(list(paths), dtype=str),
            features=np.asarray(features, dtype=np.float32),
            failed_paths=np.asarray([p for p, _ in failed], dtype=str),
            failed_reasons=np.asarray([r for _, r in failed], dtype=str),
            layout=np.asarray(json.dumps(layout)),
        )
        atomic_write(self.folder / f"batch-{self._batches:06d}.npz", lambda handle: handle.write(buffer.getvalue()))
        self.layout = layout or self.layout
        self.vectors.update(zip(paths, np.asarray(features, np.float32)))
        self.failed.update(failed)

    def results(self, paths: Sequence[str]) -> dict:
        """What :func:`ssan.search.encode.encode_images` returns, for ``paths`` (all in the journal)."""
        kept = [i for i, path in enumerate(paths) if path in self.vectors]
        width = self.layout["dim"] if self.layout else 0
        features = np.stack([self.vectors[paths[i]] for i in kept]) if kept else np.zeros((0, width), np.float32)
        failed = [(path, self.failed[path]) for path in paths if path in self.failed]
        return {"features": features, "kept": kept, "failed": failed, "layout": self.layout}

    def remove(self) -> None:
        """Forget the batches (the job completed, or they belong to other encoders)."""
        shutil.rmtree(self.folder, ignore_errors=True)
