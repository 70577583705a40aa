"""Atomic file writes: a file is either the old one or the complete new one, never half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` through ``write(handle)`` into a temporary file beside it, fsync, rename.

    A process killed at any moment leaves the previous file (or none) under ``path``; at most
    a ``.<name>.*.tmp`` file remains beside it, which later writes ignore.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def fsync_directory(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
