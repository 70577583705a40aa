"""Following boxes across frames: ByteTrack (Roboflow's maintained ``trackers`` package) or given ids.

Both trackers take the boxes of one sampled frame and return a track id per box (``-1``:
not part of a track). :class:`ByteTracker` associates boxes by motion and overlap, in two
stages by confidence as ByteTrack does: boxes scoring at least ``min_score`` start and
extend tracks, boxes between ``min_score / 2`` and ``min_score`` only extend them.
:class:`GivenIds` passes through the ids of a MOT file (``--keep-ids``).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from ssan.video._deps import bytetrack_class

log = logging.getLogger(__name__)

LOST_SECONDS = 2.0  # a track unmatched for this long ends (occlusions shorter than this are bridged)


class ByteTracker:
    """ByteTrack over sampled frames.

    Args:
        fps: rate of the frames it is given (the sampling rate).
        min_score: confidence that starts a track (boxes down to half of it extend tracks);
            None: the boxes have no meaningful confidence, every box counts as sure.
        lost_seconds: how long an unmatched track is kept alive.
    """

    def __init__(self, fps: float, min_score: Optional[float] = None, lost_seconds: float = LOST_SECONDS):
        tracker_class, self._detections = bytetrack_class()
        threshold = 0.5 if min_score is None else float(min_score)
        self.min_score = min_score
        self.tracker = tracker_class(
            lost_track_buffer=max(1, int(round(lost_seconds * 30))),
            frame_rate=float(fps),
            track_activation_threshold=threshold,
            high_conf_det_threshold=threshold,
            minimum_consecutive_frames=1,
        )

    def update(
        self, boxes: np.ndarray, scores: Optional[np.ndarray], time: float, ids: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Track ids (N int64, 1-based; -1 untracked) for boxes N x 4 (x0, y0, x1, y1) at ``time`` seconds."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        confidence = None
        if self.min_score is not None and scores is not None:
            confidence = np.asarray(scores, dtype=np.float32)
        detections = self._detections(xyxy=boxes, confidence=confidence, data={"row": np.arange(len(boxes))})
        tracked = self.tracker.update(detections, timestamp=float(time))
        out = np.full(len(boxes), -1, dtype=np.int64)
        if len(tracked):
            given = np.asarray(tracked.tracker_id, dtype=np.int64)
            out[np.asarray(tracked.data["row"], dtype=np.int64)] = np.where(given >= 0, given + 1, -1)
        return out


class GivenIds:
    """The track ids a MOT file already carries (``--keep-ids``)."""

    def update(
        self, boxes: np.ndarray, scores: Optional[np.ndarray], time: float, ids: Optional[np.ndarray] = None
    ) -> np.ndarray:
        if ids is None:
            raise ValueError("GivenIds needs the boxes' ids")
        return np.asarray(ids, dtype=np.int64)
