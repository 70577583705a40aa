"""Finding the images of a gallery folder, safely.

The folder is walked recursively without following directory links; a file
link is accepted only when its target lies inside the folder (a link that
leads elsewhere could expose any file of the machine through the web
service), and is recorded by its resolved path so one image is never indexed
twice.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Tuple, Union

from ssan.errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp"}
)


def is_image_name(name: str) -> bool:
    """True when the file name has one of the gallery suffixes (any letter case)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_video_name(name: str) -> bool:
    """True when the file name has one of the footage suffixes (any letter case)."""
    return Path(name).suffix.lower() in VIDEO_SUFFIXES


def is_within(path: Path, root: Path) -> bool:
    """True when the (resolved) ``path`` lies inside the (resolved) ``root``."""
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _accept(candidate: Path, root: Path) -> Tuple[Union[Path, None], str]:
    """(resolved path, "") for a usable file, (None, reason) otherwise."""
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return None, f"broken link or unreadable entry ({exc.__class__.__name__})"
    if not is_within(resolved, root):
        return None, f"link pointing outside the gallery folder ({resolved})"
    if not resolved.is_file():
        return None, "not a regular file"
    return resolved, ""


def find_images(folder: Union[str, Path]) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Every image file under ``folder`` (recursive, sorted, deduplicated).

    Returns:
        (paths, refused): resolved absolute paths of the images, and ``(path, reason)``
        for entries with an image suffix that were refused (links leading outside the
        folder, broken links). Files with other suffixes are ignored silently.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"gallery folder {root} does not exist or is not a folder")
    root = root.resolve()
    found, refused, seen = [], [], set()
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs.sort()
        for name in sorted(files):
            if not is_image_name(name):
                continue
            candidate = Path(directory) / name
            resolved, reason = _accept(candidate, root)
            if resolved is None:
                refused.append((str(candidate), reason))
            elif resolved not in seen:
                seen.add(resolved)
                found.append(resolved)
    for path, reason in refused:
        log.warning("skipped %s: %s", path, reason)
    return found, refused
