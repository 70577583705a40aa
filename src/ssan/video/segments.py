"""Footage cut into time segments that overlap, each turned into tracks on its own (``--ray``).

A file of D seconds becomes segments starting every ``seconds`` s; each one is decoded up to
``overlap`` s past the next one's start (:func:`plan_segments`), on the sampling grid of the
whole file (:meth:`ssan.video.video_file.VideoReader.frames_between`), so its sampled frames
are the ones the single-process path samples. A segment *owns* its frames from ``own_from``
(its start plus the overlap, 0 for the first) to its end: the first ``overlap`` seconds are
seen by the segment before as well, so the tracker of the later segment has warmed up by then
and the two can be matched there (:mod:`ssan.video.segment_join`).

:class:`SegmentIngest` returns every tracked box (frame, row of the frame's boxes, the
segment's track id, box, crop quality) and the crops that may be chosen as a joined track's
best: a box can only end in the pool of ``POOL_FACTOR x keep`` crops of its track if fewer
than that many boxes of the track score strictly higher, so every owned box with fewer than
that many strictly better boxes in its segment's piece of the track is cut and encoded.
"""

from __future__ import annotations

import time as clock
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from ssan.errors import SsanError
from ssan.video.frames import open_source
from ssan.video.ingest import MotBoxes, SourceIngest, _tracker
from ssan.video.tracks import POOL_FACTOR, cut_crop

DEFAULT_SEGMENT_S = 180.0
DEFAULT_OVERLAP_S = 5.0


@dataclass(frozen=True)
class Segment:
    """A time range of one source: decoded from ``start`` to ``end`` (None: its end), owned from ``own_from``."""

    index: int
    start: float
    end: Optional[float]
    own_from: float


def check_segments(seconds: float, overlap: float) -> None:
    if not seconds > 0 or not overlap > 0 or not overlap < seconds:
        raise SsanError(
            f"--segment-seconds and --segment-overlap must be positive with the overlap shorter "
            f"(got {seconds:g} and {overlap:g})"
        )


def plan_segments(duration: Optional[float], seconds: float, overlap: float) -> List[Segment]:
    """Segments every ``seconds`` s, each decoded ``overlap`` s into the next (one when the length is unknown)."""
    check_segments(seconds, overlap)
    starts = [0.0]
    while duration is not None and len(starts) * seconds + overlap < duration:
        starts.append(len(starts) * seconds)
    return [
        Segment(i, start, starts[i + 1] + overlap if i + 1 < len(starts) else None, start + overlap if i else 0.0)
        for i, start in enumerate(starts)
    ]


class SegmentIngest(SourceIngest):
    """The tracked boxes of one segment and the crops that may be chosen (see the module)."""

    def run(self, segment: Segment) -> dict:
        started = clock.perf_counter()
        self.observations: List[list] = []
        self.crops: Dict[tuple, object] = {}  # (frame, row) -> picture, candidates so far
        self._limit = 8 * POOL_FACTOR * self.options.keep
        frames = []
        with open_source(self.source, self.options.frame_rate) as reader:
            self.boxes.fit(reader.width, reader.height)
            tracker = _tracker(self.boxes, self.options)
            sampled = (
                reader.frames_between(self.options.fps, segment.start, segment.end)
                if hasattr(reader, "frames_between")
                else reader.frames(self.options.fps)
            )
            for frame in sampled:
                owned = frame.time >= segment.own_from
                frames += [[frame.number, frame.time]] if owned else []
                self.segment_frame(frame, tracker, owned)
        candidates = self._candidates()
        used = self.boxes.used_frames if isinstance(self.boxes, MotBoxes) else None
        return {
            "frames": frames,
            "observations": self.observations,
            "candidates": {key: self.crops[key] for key in candidates},
            "used_frames": used,
            "seconds": clock.perf_counter() - started,
        }

    def segment_frame(self, frame, tracker, owned: bool) -> None:
        boxes, track_ids, quality = self.track_frame(frame, tracker)
        for row in np.flatnonzero(track_ids >= 0):
            box = [float(v) for v in boxes[row]]
            self.observations.append(
                [frame.number, frame.time, int(row), int(track_ids[row]), box, float(quality[row]), owned]
            )
            if owned:
                self.crops[(frame.number, int(row))] = cut_crop(frame.image, box)
        self._prune()

    def _candidates(self) -> set:
        pool = POOL_FACTOR * self.options.keep
        by_track: Dict[int, list] = {}
        for number, _, row, track, _, quality, owned in self.observations:
            if owned:
                by_track.setdefault(track, []).append((quality, (number, row)))
        keys = set()
        for pieces in by_track.values():
            qualities = np.sort(np.array([q for q, _ in pieces]))[::-1]
            for quality, key in pieces:
                if np.count_nonzero(qualities > quality) < pool:
                    keys.add(key)
        return keys

    def _prune(self) -> None:
        """Drop the pictures that can no longer be candidates (bounded memory on long segments)."""
        if len(self.crops) > self._limit:
            keep = self._candidates()
            self.crops = {k: v for k, v in self.crops.items() if k in keep}
            self._limit = max(self._limit, 2 * len(self.crops))
