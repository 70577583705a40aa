"""Joining the tracks of overlapping segments (:mod:`ssan.video.segments`) into the tracks of the file.

With ``--keep-ids`` the segments' track ids are the MOT file's ids, so the pieces of one id
are one track. Otherwise each segment ran its own tracker: a piece of segment ``i`` and one of
segment ``i + 1`` are the same person when their boxes on the frames both segments sampled
(the overlap) have an IoU above :data:`JOIN_IOU` on more of those frames than any other pair
(greedy, one partner each).

The joined boxes are then replayed frame by frame, in the order the single-process path
adds them, through :meth:`ssan.video.ingest.SourceIngest.finished` (tracks end after the
same idle time) and a :class:`ssan.video.tracks.TrackBuilder` that pools the boxes'
qualities instead of their pictures; the crops it chooses are looked up among the
segments' encoded candidates and averaged as :class:`ssan.video.encode.TrackEncoder` does.
So with ``--keep-ids`` the tracks, their ids, times, boxes and crops are those of one
process. With a tracker, ids are numbered 1, 2, ... in the order the tracks start.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import numpy as np

from ssan.errors import SsanError
from ssan.video.aggregate import mean_of_normalised
from ssan.video.encode import crop_name, track_entry
from ssan.video.frames import Source
from ssan.video.ingest import IngestOptions, SourceIngest
from ssan.video.tracks import TrackBuilder

JOIN_IOU = 0.5


class _QualityBuilder(TrackBuilder):
    """A TrackBuilder whose pool holds each box's key (frame, row) in place of its picture."""

    def cut(self, image, box):
        return image


def candidate_name(source: Source, number: int, row: int) -> str:
    """The file a segment writes a candidate best crop to (renamed when chosen, else removed)."""
    return crop_name(source, SimpleNamespace(track=f"box{number}r{row}", first_frame=0))


def _iou(a, b) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    h = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _boxes_by_frame(observations, start: float, end: float) -> Dict[int, list]:
    """The boxes of the frames with ``start <= time < end``, by frame."""
    frames: Dict[int, list] = {}
    for number, time, _, track, box, _, _ in observations:
        if start <= time < end:
            frames.setdefault(number, []).append((track, box))
    return frames


def _match(earlier: dict, later: dict) -> Dict[int, int]:
    """Later piece -> earlier piece, by the count of shared frames where their boxes overlap."""
    counts: Dict[tuple, int] = {}
    for number in set(earlier) & set(later):
        for a, box_a in earlier[number]:
            for b, box_b in later[number]:
                if _iou(box_a, box_b) > JOIN_IOU:
                    counts[(a, b)] = counts.get((a, b), 0) + 1
    matched: Dict[int, int] = {}
    used = set()
    for (a, b), _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if a not in used and b not in matched:
            matched[b] = a
            used.add(a)
    return matched


def piece_keys(segments: list, results: list, keep_ids: bool) -> List[Dict[int, object]]:
    """For each segment, its track ids -> the key of the joined track they belong to."""
    if keep_ids:
        return [{o[3]: o[3] for o in r["observations"]} for r in results]
    keys = [{o[3]: (0, o[3]) for o in results[0]["observations"]}]
    for i in range(1, len(results)):
        window = segments[i].start, segments[i].own_from  # decoded by both segments
        earlier = _boxes_by_frame(results[i - 1]["observations"], *window)
        later = _boxes_by_frame(results[i]["observations"], *window)
        matched = _match(earlier, later)
        keys.append(
            {o[3]: keys[i - 1][matched[o[3]]] if o[3] in matched else (i, o[3]) for o in results[i]["observations"]}
        )
    return keys


def join_segments(source: Source, segments: list, results: list, options: IngestOptions, crops: Path, widths):
    """The joined tracks of one file: (entries, vectors, stats) as the single-process path gives them."""
    keys = piece_keys(segments, results, options.keep_ids)
    frames = sorted({(n, t) for r in results for n, t in r["frames"]})
    boxes: Dict[int, list] = {}
    for i, result in enumerate(results):
        for number, _, row, track, box, quality, owned in result["observations"]:
            if owned:
                boxes.setdefault(number, []).append((row, keys[i][track], box, quality))
    features = {key: vector for r in results for key, vector in r["features"].items()}
    replay = SourceIngest(source, None, options, 0.0, False)
    running: Dict[object, _QualityBuilder] = {}
    tracks, next_id = [], 1
    for number, time in frames:
        for row, key, box, quality in sorted(boxes.get(number, []), key=lambda b: b[0]):
            if key not in running:
                running[key] = _QualityBuilder(key if options.keep_ids else next_id, options.keep)
                next_id += 1
            running[key].add(number, time, box, quality, f"{number}:{row}")
            replay.stats["boxes"] += 1
        tracks += replay.finished(running, time)
    tracks += replay.finished(running, None)
    replay.stats.update(frames=len(frames), seconds=sum(r["seconds"] for r in results))
    entries, vectors = [], []
    for track in tracks:
        missing = [c.image for c in track.crops if c.image not in features]
        if missing:
            raise SsanError(f"{source.path}: crops {missing} of track {track.track} were not encoded by their segment")
        vectors.append(mean_of_normalised(np.stack([features[c.image] for c in track.crops]), widths))
        number, row = track.crops[0].image.split(":")
        path = crops / crop_name(source, track)
        os.replace(crops / candidate_name(source, int(number), int(row)), path)
        entries.append(track_entry(source, track, path.resolve()))
    return entries, vectors, replay.stats
