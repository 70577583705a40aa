"""Detections in the MOTChallenge text format, as written by detectors, trackers and annotators.

One box per line: ``frame,id,x,y,w,h,conf[,class,visibility[,...]]``: 1-based frame number,
track id (``-1`` when the boxes are not tracked), top-left corner and size in pixels,
confidence. Ground-truth files use the 7th value as a "consider" flag (0 = ignore) and add
a class (1 = pedestrian) and a visibility in [0, 1]; detection files put ``-1`` there.

Reading is strict: a line that is not numbers, a frame number below 1, a non-integer id,
a box without positive size or a non-finite value makes the file refused with the line
numbers. Boxes are checked against the frame by :func:`fit_to_frame`: partly outside, they
are clipped to the frame; wholly outside, they are dropped; both are counted and reported.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ssan.video.errors import DetectionsError

log = logging.getLogger(__name__)

PERSON_CLASSES = (1, 2, 7)  # MOT16/17 classes that are people: pedestrian, person on vehicle, static person
MAX_REPORTED = 5  # malformed lines named in the error message
MIN_SIDE = 2.0  # a clipped box narrower or lower than this many pixels is dropped


@dataclass
class MotDetections:
    """The boxes of one MOT file, by frame.

    ``frames[n]`` is an ``N x 7`` float64 array of rows ``[id, x, y, w, h, conf, visibility]``
    (``visibility`` is NaN when the file has none).
    """

    path: str
    frames: Dict[int, np.ndarray] = field(default_factory=dict)
    has_ids: bool = False  # some line carries an id other than -1
    dropped: int = 0  # lines of other classes or flagged "ignore"

    def __len__(self) -> int:
        return sum(len(rows) for rows in self.frames.values())


def _parse(line: str) -> Tuple[Optional[list], str]:
    """(values, "") or (None, reason) for one non-empty line."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) < 6:
        return None, f"expected at least 6 comma-separated values (frame,id,x,y,w,h), got {len(parts)}"
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None, "not all values are numbers"
    if not all(math.isfinite(v) for v in values[:7]):
        return None, "a value is not finite"
    frame, track, _, _, w, h = values[:6]
    if frame < 1 or frame != int(frame):
        return None, f"frame number must be a whole number >= 1, got {parts[0]}"
    if track != int(track) or (track < 0 and track != -1):
        return None, f"id must be a whole number (or -1), got {parts[1]}"
    if w <= 0 or h <= 0:
        return None, f"box width and height must be positive, got {parts[4]} x {parts[5]}"
    return values, ""


def _row(values: list) -> Tuple[Optional[list], bool]:
    """([id, x, y, w, h, conf, visibility], kept): ground-truth lines of other classes or flagged 0 are dropped."""
    conf = values[6] if len(values) > 6 else 1.0
    visibility = float("nan")
    if len(values) > 8 and values[7] > 0 and values[7] == int(values[7]):  # ground truth: class, visibility
        if int(values[7]) not in PERSON_CLASSES or conf == 0:
            return None, False
        if 0.0 <= values[8] <= 1.0:
            visibility = values[8]
    return [values[1], values[2], values[3], values[4], values[5], conf, visibility], True


def read_mot(path: Union[str, Path]) -> MotDetections:
    """Read and check a MOT file; DetectionsError naming the lines on any malformed one.

    Empty lines and lines starting with ``#`` are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DetectionsError(f"detections file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DetectionsError(f"cannot read detections file {path}: {exc}") from None
    rows: Dict[int, List[list]] = {}
    problems, dropped = [], 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        values, reason = _parse(line)
        if values is None:
            problems.append((number, reason))
            continue
        row, kept = _row(values)
        if kept:
            rows.setdefault(int(values[0]), []).append(row)
        else:
            dropped += 1
    if problems:
        listing = "; ".join(f"line {n}: {r}" for n, r in problems[:MAX_REPORTED])
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise DetectionsError(f"detections file {path}: {len(problems)} malformed line(s): {listing}{more}")
    frames = {n: np.asarray(r, dtype=np.float64) for n, r in sorted(rows.items())}
    has_ids = any(bool((a[:, 0] >= 0).any()) for a in frames.values())
    if has_ids and any(bool((a[:, 0] < 0).any()) for a in frames.values()):
        log.warning("detections file %s: some lines have ids and some have -1", path)
    return MotDetections(str(path), frames, has_ids, dropped)


def fit_to_frame(detections: MotDetections, width: int, height: int) -> Dict[str, int]:
    """Clip boxes partly outside a ``width`` x ``height`` frame; drop those (nearly) wholly outside. In place.

    Returns:
        ``{"clipped": n, "dropped": m}``.
    """
    clipped = dropped = 0
    for number, rows in list(detections.frames.items()):
        x0, y0 = rows[:, 1], rows[:, 2]
        x1, y1 = x0 + rows[:, 3], y0 + rows[:, 4]
        cx0, cy0 = np.clip(x0, 0, width), np.clip(y0, 0, height)
        cx1, cy1 = np.clip(x1, 0, width), np.clip(y1, 0, height)
        keep = (cx1 - cx0 >= MIN_SIDE) & (cy1 - cy0 >= MIN_SIDE)
        changed = keep & ((cx0 != x0) | (cy0 != y0) | (cx1 != x1) | (cy1 != y1))
        clipped += int(changed.sum())
        dropped += int((~keep).sum())
        rows = np.column_stack([rows[:, 0], cx0, cy0, cx1 - cx0, cy1 - cy0, rows[:, 5], rows[:, 6]])[keep]
        if len(rows):
            detections.frames[number] = rows
        else:
            del detections.frames[number]
    if clipped or dropped:
        log.warning(
            "detections file %s: %d box(es) partly outside the %dx%d frame clipped to it, %d wholly outside dropped",
            detections.path,
            clipped,
            width,
            height,
            dropped,
        )
    return {"clipped": clipped, "dropped": dropped}
