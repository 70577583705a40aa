"""From footage to tracks: decode, get the person boxes, follow them, keep each track's best crops.

Per source (video file or folder of frames), frames are sampled at ``fps``; the boxes of a
frame come from a MOT file (:class:`MotBoxes`) or a person detector (:class:`DetectorBoxes`);
a tracker gives them track ids; every track keeps a bounded pool of crops
(:class:`ssan.video.tracks.TrackBuilder`). Tracks are handed on as soon as they end (no box
for longer than the tracker can bridge), so memory is bounded by the people on screen, not
by the length of the footage.
"""

from __future__ import annotations

import logging
import time as clock
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import numpy as np
from tqdm.auto import tqdm

from ssan.video.errors import DetectionsError
from ssan.video.frame import Frame
from ssan.video.frames import Source, open_source
from ssan.video.mot import MotDetections, fit_to_frame
from ssan.video.tracking import LOST_SECONDS, ByteTracker, GivenIds
from ssan.video.tracks import Track, TrackBuilder, crop_quality

log = logging.getLogger(__name__)

GIVEN_IDS_IDLE_S = 30.0  # with --keep-ids, an id unseen this long ends its track (it may come back as a new one)


@dataclass
class IngestOptions:
    """How footage becomes tracks (one place for these settings; ``ssan index`` fills it)."""

    fps: float = 5.0  # frames sampled per second (every frame when the source has fewer)
    keep: int = 8  # crops kept (and encoded) per track
    min_boxes: int = 2  # tracks with fewer boxes over the sampled frames are dropped
    min_score: Optional[float] = None  # boxes >= this start tracks, >= half of it extend them (None: MOT: all)
    keep_ids: bool = False  # MOT files: use their ids as tracks instead of tracking
    frame_rate: Optional[float] = None  # folders of frames without seqinfo.ini: their frame rate


class MotBoxes:
    """The boxes of a MOT file for each frame: ``(boxes N x 4 xywh, scores, ids, visibility)``."""

    def __init__(self, detections: MotDetections, min_score: Optional[float]):
        self.detections, self.min_score = detections, min_score
        self.used_frames = 0

    def fit(self, width: int, height: int) -> None:
        fit_to_frame(self.detections, width, height)

    def __call__(self, frame: Frame):
        rows = self.detections.frames.get(frame.number)
        if rows is None:
            return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0)
        self.used_frames += 1
        if self.min_score is not None:
            rows = rows[rows[:, 5] >= self.min_score / 2]
        return rows[:, 1:5], rows[:, 5], rows[:, 0].astype(np.int64), rows[:, 6]


class DetectorBoxes:
    """A person detector's boxes for each frame (as MOT-style rows; no ids, no visibility)."""

    def __init__(self, detector):
        self.detector = detector

    def fit(self, width: int, height: int) -> None:
        pass

    def __call__(self, frame: Frame):
        ((xyxy, scores),) = self.detector([frame.image])
        xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        boxes = np.column_stack([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]])
        keep = (boxes[:, 2] >= 2) & (boxes[:, 3] >= 2)
        return boxes[keep], np.asarray(scores, dtype=np.float64)[keep], None, None


def _tracker(boxes_source, options: IngestOptions):
    if options.keep_ids:
        return GivenIds()
    min_score = options.min_score if not isinstance(boxes_source, MotBoxes) else boxes_source.min_score
    if isinstance(boxes_source, DetectorBoxes) and min_score is None:
        raise ValueError("detector boxes need a min_score")
    return ByteTracker(options.fps, min_score)


class SourceIngest:
    """Tracks of one source; iterate :meth:`tracks`, then read :attr:`stats`.

    Args:
        source: the footage; boxes: :class:`MotBoxes` or :class:`DetectorBoxes`;
        options: sampling and track settings; reference_height: crops this tall (pixels)
            count as large enough (the model's input height is a good choice).
    """

    def __init__(self, source: Source, boxes, options: IngestOptions, reference_height: float, progress: bool = True):
        self.source, self.boxes, self.options = source, boxes, options
        self.reference_height, self.progress = reference_height, progress
        self.stats = {"frames": 0, "boxes": 0, "tracks": 0, "short_tracks": 0, "seconds": 0.0}
        self.idle = GIVEN_IDS_IDLE_S if options.keep_ids else LOST_SECONDS + 2.0 / options.fps

    def tracks(self) -> Iterator[Track]:
        """Finished tracks, in the order they end; VideoError when the source cannot be opened."""
        started = clock.perf_counter()
        with open_source(self.source, self.options.frame_rate) as reader:
            self.boxes.fit(reader.width, reader.height)
            tracker = _tracker(self.boxes, self.options)
            running: Dict[int, TrackBuilder] = {}
            bar = tqdm(
                total=reader.expected_frames(self.options.fps),
                desc=self.source.name,
                unit="frame",
                disable=not self.progress,
                leave=False,
            )
            for frame in reader.frames(self.options.fps):
                self.add_frame(frame, tracker, running)
                yield from self.finished(running, frame.time)
                bar.update(1)
                bar.set_postfix(tracks=self.stats["tracks"], refresh=False)
            bar.close()
            yield from self.finished(running, None)
        self.stats["seconds"] = clock.perf_counter() - started
        self._check_used()

    def track_frame(self, frame: Frame, tracker) -> tuple:
        """The frame's boxes (N x 4 xywh), their track ids (-1: none) and crop qualities."""
        boxes, scores, ids, visibility = self.boxes(frame)
        if not len(boxes):
            return boxes, np.zeros(0, np.int64), np.zeros(0)
        xyxy = np.column_stack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]])
        track_ids = tracker.update(xyxy, scores, frame.time, ids)
        height, width = frame.image.shape[:2]
        return boxes, track_ids, crop_quality(boxes, scores, width, height, self.reference_height, visibility)

    def add_frame(self, frame: Frame, tracker, running: Dict[int, TrackBuilder]) -> None:
        boxes, track_ids, quality = self.track_frame(frame, tracker)
        self.stats["frames"] += 1
        for row in np.flatnonzero(track_ids >= 0):
            track = int(track_ids[row])
            builder = running.get(track)
            if builder is None:
                builder = running[track] = TrackBuilder(track, self.options.keep)
            builder.add(frame.number, frame.time, boxes[row], float(quality[row]), frame.image)
            self.stats["boxes"] += 1

    def finished(self, running: Dict[int, TrackBuilder], now: Optional[float]) -> Iterator[Track]:
        """Hand on the tracks that ended (all of them when ``now`` is None)."""
        ended = [t for t, b in running.items() if now is None or now - b.end > self.idle]
        for track in ended:
            builder = running.pop(track)
            if builder.boxes_seen < self.options.min_boxes:
                self.stats["short_tracks"] += 1
                continue
            self.stats["tracks"] += 1
            yield builder.finish()

    def _check_used(self) -> None:
        if isinstance(self.boxes, MotBoxes) and len(self.boxes.detections) and not self.boxes.used_frames:
            raise DetectionsError(
                f"detections file {self.boxes.detections.path}: none of its frame numbers is a "
                f"sampled frame of {self.source.path} (is it the file for this footage?)"
            )
