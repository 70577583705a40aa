"""Encoding finished tracks: their crops in batches, one aggregated vector and one entry per track.

Each track's best crop is written as a JPEG into the index folder (``crops/``); the entry
names it as the track's ``path`` (see :mod:`ssan.search.tracks` for the entry's fields).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch

from ssan._files import open_private, private_dir
from ssan.models import flatten_features
from ssan.search.encode import layout_of
from ssan.video.aggregate import mean_of_normalised
from ssan.video.clock import shifted
from ssan.video.frames import Source
from ssan.video.tracks import Track

log = logging.getLogger(__name__)

CROPS_DIR = "crops"


def crop_name(source: Source, track: Track) -> str:
    """File name of a track's best crop: unique per source, track and start frame."""
    digest = hashlib.sha1(source.path.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"{digest}-{track.track}-{track.first_frame}.jpg"


def track_entry(source: Source, track: Track, crop_path: Path) -> dict:
    """The index entry of a finished track (plain data, JSON-ready)."""
    entry = {
        "path": str(crop_path),
        "name": f"{source.camera}/track {track.track}",
        "id": None,
        "kind": "track",
        "track": track.track,
        "camera": source.camera,
        "video": source.path,
        "source_kind": source.kind,
        "start": round(track.start, 3),
        "end": round(track.end, 3),
        "first_frame": track.first_frame,
        "last_frame": track.last_frame,
        "boxes_seen": track.boxes_seen,
        "frames": [c.number for c in track.crops],
        "times": [round(c.time, 3) for c in track.crops],
        "boxes": [[round(v, 1) for v in c.box] for c in track.crops],
    }
    if source.start_utc is not None:
        entry["utc_start"] = shifted(source.start_utc, entry["start"])
        entry["utc_end"] = shifted(source.start_utc, entry["end"])
    return entry


class TrackEncoder:
    """Collects finished tracks and encodes their crops in batches of about ``batch_size``.

    Args:
        encoders: ``encoders.image(B x 3 x H x W) -> feature dict`` (see :mod:`ssan.search.encoders`).
        transform: PIL crop -> 3 x H x W tensor (the model's evaluation transform).
        crops_dir: where the best crops are written.
    Attributes:
        entries: one dict per encoded track; vectors: their aggregated F-wide float32 vectors;
        layout: the feature layout (terms, widths, dim), known after the first batch.
    """

    def __init__(self, encoders, transform, crops_dir: Path, batch_size: int = 64):
        self.encoders, self.transform, self.batch_size = encoders, transform, batch_size
        self.crops_dir = private_dir(crops_dir)
        self.entries: List[dict] = []
        self.vectors: List[np.ndarray] = []
        self.layout: Optional[dict] = None
        self._pending: list = []  # (entry, crops)
        self.crops_encoded = 0

    def add(self, source: Source, track: Track) -> None:
        """Queue a finished track (its best crop is written now); encodes when a batch is full."""
        path = self.crops_dir / crop_name(source, track)
        with open_private(path) as handle:  # people's pictures: 0600 in a 0700 folder
            track.crops[0].image.save(handle, "JPEG", quality=90)
        self._pending.append((track_entry(source, track, path.resolve()), [c.image for c in track.crops]))
        if sum(len(crops) for _, crops in self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Encode every queued track."""
        if not self._pending:
            return
        images = torch.stack([self.transform(image) for _, crops in self._pending for image in crops])
        feats = self.encoders.image(images)
        self.layout = self.layout or layout_of(feats)
        flat = flatten_features(feats).numpy()
        start = 0
        for entry, crops in self._pending:
            self.vectors.append(mean_of_normalised(flat[start : start + len(crops)], self.layout["widths"]))
            self.entries.append(entry)
            start += len(crops)
        self.crops_encoded += len(images)
        self._pending = []

    def features(self) -> np.ndarray:
        """N x F float32 vectors of the encoded tracks (N may be 0)."""
        self.flush()
        width = self.layout["dim"] if self.layout else 0
        return np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, width), np.float32)
