"""Errors of the footage pipeline (all :class:`ssan.errors.SsanError`: one line, exit status 2)."""

from __future__ import annotations

from ssan.errors import CheckpointError, DataError


class VideoError(DataError):
    """A video file or folder of frames that cannot be read (missing, corrupt, unknown codec...)."""


class DetectionsError(DataError):
    """A detections file (MOTChallenge format) that cannot be used: malformed lines, no boxes..."""


class DetectorWeightsError(CheckpointError):
    """Person-detector weights that are not on this machine or cannot be loaded."""
