"""Atomic file writes (a file is either the old one or the complete new one, never half-written), and
private folders and files (0700 and 0600: an index holds people's pictures and their features)."""

from __future__ import annotations

import os
import stat
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


PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: PathLike) -> Path:
    """Create ``path`` (and missing parents) if needed and make it 0700: only its owner may enter it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def open_private(path: PathLike) -> BinaryIO:
    """Open ``path`` for writing (created or truncated) with mode 0600, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)  # an existing file keeps its mode through O_CREAT
    return os.fdopen(fd, "wb")


def open_to_others(*folders: PathLike) -> list:
    """Those of ``folders`` that exist and that other users may read or enter (group or other bits set)."""
    found = []
    for folder in map(Path, folders):
        if folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) & 0o077:
            found.append(folder)
    return found
