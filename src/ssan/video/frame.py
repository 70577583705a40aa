"""One decoded frame of footage (shared by the frame-folder and the video-file readers)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Frame:
    """One decoded frame: 1-based number in its source, time in seconds, H x W x 3 uint8 RGB pixels."""

    number: int
    time: float
    image: np.ndarray
