"""Footage in, tracks out: decode video, find and follow the people, index their tracks.

- :func:`build_track_index` (``ssan index --video``): video files, folders of them or of
  frames; boxes from a MOT file or a registered person detector (:data:`DETECTORS`,
  :func:`register_detector`); ByteTrack (or the file's ids); one aggregated vector per track.
- :func:`generate_synthetic_video` (``ssan synth-video``): a synthetic street scene with
  MOTChallenge ground truth and the captions of every walker.
- :func:`track_frame`: the full frame of a track result, with its box.

Decoding needs PyAV and tracking Roboflow's ``trackers``: ``pip install 'ssan[video]'``.
"""

from ssan.video.detectors import DETECTORS, build_detector, register_detector
from ssan.video.errors import DetectionsError, DetectorWeightsError, VideoError
from ssan.video.frame import Frame
from ssan.video.frames import Source, find_sources, read_frame
from ssan.video.ingest import IngestOptions
from ssan.video.mot import MotDetections, read_mot
from ssan.video.results import track_frame
from ssan.video.synth import generate_synthetic_video
from ssan.video.track_index import build_track_index

__all__ = [
    "DETECTORS",
    "DetectionsError",
    "DetectorWeightsError",
    "Frame",
    "IngestOptions",
    "MotDetections",
    "Source",
    "VideoError",
    "build_detector",
    "build_track_index",
    "find_sources",
    "generate_synthetic_video",
    "read_frame",
    "read_mot",
    "register_detector",
    "track_frame",
]
