"""What a track result needs besides its entry: the full frame of one of its crops."""

from __future__ import annotations

from typing import Tuple

import numpy as np

from ssan.errors import SsanError
from ssan.search.tracks import is_track
from ssan.video.errors import VideoError
from ssan.video.frames import read_frame


def track_frame(entry: dict, which: int = 0) -> Tuple[np.ndarray, Tuple[float, float, float, float]]:
    """(H x W x 3 uint8 frame, (x, y, w, h) box) of a track's kept crop ``which`` (0: the best one).

    The frame is decoded again from the source (a seek in a video file, a file of a folder
    of frames); VideoError when the source is gone or damaged.
    """
    if not is_track(entry):
        raise SsanError(f"entry {entry.get('name', '?')!r} is not a track")
    if entry.get("source_kind") == "stream":
        raise VideoError(
            f"track {entry['track']} of camera {entry.get('camera')} is from a live stream: no frame was kept"
        )
    if not 0 <= which < len(entry["frames"]):
        raise SsanError(f"track {entry['track']} keeps {len(entry['frames'])} crops, not {which + 1}")
    image = read_frame(entry["video"], entry["source_kind"], entry["frames"][which], entry["times"][which])
    return image, tuple(entry["boxes"][which])
