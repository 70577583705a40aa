"""Moved to :mod:`ssan.distributed` (shared by the engine, evaluation and search); to be removed."""

from ssan.distributed import DistInfo, barrier, cleanup, current, init_distributed

__all__ = ["DistInfo", "barrier", "cleanup", "current", "init_distributed"]
