"""Tracks as they grow: extent in time, and a bounded pool of their best crops.

Every box of a track is scored for how useful its crop is (:func:`crop_quality`: confident,
not hidden behind a nearer box, not cut by the frame edge, large enough); a track keeps
only its :data:`POOL_FACTOR` x ``keep`` best crops while it runs (small pictures, at most
:data:`CROP_HEIGHT` pixels tall), so memory stays bounded on long footage. When the track
ends, ``keep`` of them are chosen, best first and spread in time (:meth:`TrackBuilder.finish`).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image

CROP_HEIGHT = 256  # pooled crops are scaled down to at most this height
POOL_FACTOR = 4  # a running track keeps POOL_FACTOR * keep candidate crops
EDGE_PENALTY = 0.5  # quality factor of a box touching the frame edge (a person cut by it)
_order = itertools.count()


@dataclass(eq=False)
class Crop:
    """One kept observation of a track: where and when, how good, and the pixels."""

    quality: float
    number: int  # 1-based frame number in the source
    time: float  # seconds
    box: Tuple[float, float, float, float]  # x, y, w, h in pixels (MOT convention)
    image: Image.Image  # RGB, at most CROP_HEIGHT tall


@dataclass
class Track:
    """A finished track of one source, with its chosen crops (best first)."""

    track: int  # the tracker's id (or the MOT file's id with --keep-ids)
    start: float  # seconds: first and last sampled frame where it was seen
    end: float
    first_frame: int
    last_frame: int
    boxes_seen: int  # boxes over the sampled frames
    crops: List[Crop] = field(default_factory=list)


def crop_quality(
    boxes: np.ndarray,
    scores: np.ndarray,
    width: int,
    height: int,
    reference_height: float,
    visibility: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Usefulness in [0, 1] of each box's crop, for boxes N x 4 (x, y, w, h) of one frame.

    score x unhidden share x edge factor x min(1, h / reference_height); the unhidden share is
    the given visibility (ground truth) where known, else 1 - the share of the box covered by
    boxes whose bottom edge is lower in the frame (nearer the camera), capped at 1.
    """
    x0, y0, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    x1, y1 = x0 + w, y0 + h
    overlap_w = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    overlap_h = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    nearer = y1[None, :] > y1[:, None]
    covered = np.clip((overlap_w * overlap_h * nearer).sum(1) / np.maximum(w * h, 1e-6), 0, 1)
    unhidden = 1 - covered
    if visibility is not None:
        unhidden = np.where(np.isnan(visibility), unhidden, visibility)
    at_edge = (x0 <= 1) | (y0 <= 1) | (x1 >= width - 1) | (y1 >= height - 1)
    size = np.minimum(1.0, h / reference_height)
    confidence = np.clip(np.nan_to_num(scores, nan=1.0), 0, 1)
    return confidence * unhidden * np.where(at_edge, EDGE_PENALTY, 1.0) * size


def cut_crop(image: np.ndarray, box: Tuple[float, float, float, float]) -> Image.Image:
    """The box's pixels as an RGB picture, scaled down to at most :data:`CROP_HEIGHT` tall."""
    x, y, w, h = box
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(image.shape[1], int(np.ceil(x + w))), min(image.shape[0], int(np.ceil(y + h)))
    crop = Image.fromarray(np.ascontiguousarray(image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]))
    if crop.height > CROP_HEIGHT:
        crop = crop.resize((max(1, round(crop.width * CROP_HEIGHT / crop.height)), CROP_HEIGHT), Image.BILINEAR)
    return crop


class TrackBuilder:
    """One running track: its extent and its pool of candidate crops.

    Args:
        track: the track id; keep: crops chosen when it finishes.
    """

    def __init__(self, track: int, keep: int):
        self.track, self.keep = track, keep
        self.pool_size = POOL_FACTOR * keep
        self.first_frame = self.last_frame = 0
        self.start = self.end = 0.0
        self.boxes_seen = 0
        self._pool: list = []  # min-heap of (quality, order, Crop)

    def wants(self, quality: float) -> bool:
        """Whether a crop of this quality would enter the pool (so the pixels are worth cutting)."""
        return len(self._pool) < self.pool_size or quality > self._pool[0][0]

    def add(self, number: int, time: float, box, quality: float, image: Optional[np.ndarray]) -> None:
        """Record a box of the track; its crop is cut from ``image`` when it enters the pool."""
        if self.boxes_seen == 0:
            self.first_frame, self.start = number, time
        self.last_frame, self.end = number, time
        self.boxes_seen += 1
        if image is None or not self.wants(quality):
            return
        crop = Crop(float(quality), number, time, tuple(float(v) for v in box), self.cut(image, box))
        entry = (crop.quality, next(_order), crop)
        if len(self._pool) < self.pool_size:
            heapq.heappush(self._pool, entry)
        else:
            heapq.heapreplace(self._pool, entry)

    def cut(self, image, box) -> Image.Image:
        """The pooled picture of a box (a subclass may keep something else in its place)."""
        return cut_crop(image, box)

    def finish(self) -> Track:
        """The finished track with ``keep`` crops: best first, each at least a share of the track apart."""
        ranked = [c for _, _, c in sorted(self._pool, key=lambda e: (-e[0], e[1]))]
        gap = (self.end - self.start) / (2 * self.keep)
        chosen: List[Crop] = []
        for crop in ranked:
            if all(abs(crop.time - c.time) >= gap for c in chosen):
                chosen.append(crop)
            if len(chosen) == self.keep:
                break
        for crop in ranked:  # short tracks: fill up with the next best, however close in time
            if len(chosen) == self.keep:
                break
            if all(crop is not c for c in chosen):
                chosen.append(crop)
        return Track(self.track, self.start, self.end, self.first_frame, self.last_frame, self.boxes_seen, chosen)
