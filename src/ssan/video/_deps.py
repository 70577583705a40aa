"""The optional packages of the ``video`` extra, imported when first needed, with one clear error."""

from __future__ import annotations

from ssan._extras import require
from ssan.errors import SsanError

INSTALL = "pip install 'ssan[video]'"


def av_module():
    """PyAV (FFmpeg bindings): decoding and writing video files."""
    return require("av", "reading and writing video needs PyAV", "video")


def bytetrack_class():
    """``trackers.ByteTrackTracker`` and ``supervision.Detections`` (Roboflow's maintained ByteTrack)."""
    try:
        import supervision
        from trackers import ByteTrackTracker
    except ImportError:
        raise SsanError(
            f"following boxes across frames needs the trackers package (Python >= 3.10): {INSTALL}; "
            "or pass --keep-ids with a MOT file whose lines carry track ids"
        ) from None
    return ByteTrackTracker, supervision.Detections
