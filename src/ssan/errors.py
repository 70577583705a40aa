"""Exceptions that the command line turns into one-line messages and exit status 2.

Library code raises these for problems caused by the user's input (files, data,
options); anything else is a bug and keeps its traceback.
"""


class SsanError(Exception):
    """Base class: a user-facing error with a complete, one-line message."""


class DataError(SsanError):
    """Bad dataset files, annotation records or images."""


class CheckpointError(SsanError):
    """A checkpoint that is missing, corrupted, unsafe or incompatible."""


class ConfigError(SsanError):
    """An unknown preset, key or override value."""
