"""Footage sources: video files (:mod:`ssan.video.video_file`) and folders of frames named in order.

A source yields :class:`Frame` objects sampled at a target rate: a frame is kept when its
time reaches the next sampling instant (``k / fps``), so at ``fps`` >= the source's rate
every frame is kept. Frame numbers are 1-based positions in the source (the MOTChallenge
convention), whatever the sampling. Only the frame being processed is held in memory.

A folder of frames takes its rate from ``seqinfo.ini`` (MOTChallenge layout, ``img1/``
inside a sequence folder is found) or from ``--frame-rate``; unreadable frames are skipped
with one warning.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ssan.errors import SsanError
from ssan.search.files import is_image_name, is_video_name
from ssan.video.errors import VideoError
from ssan.video.frame import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """A piece of footage: a video file (``kind="video"``) or a folder of frames (``kind="frames"``)."""

    path: str  # absolute, resolved
    kind: str  # video | frames
    camera: str  # the file stem (or the folder's name) unless given
    start_utc: Optional[str] = None  # ISO 8601 UTC instant of its first frame (ssan.video.clock), if known
    time_source: Optional[str] = None  # how start_utc was found: start-time | name | creation_time | receive

    @property
    def name(self) -> str:
        return Path(self.path).name


def _natural_key(name: str):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> List[Path]:
    """The image files of a folder of frames (``img1/`` inside a MOTChallenge sequence), in natural order."""
    folder = folder / "img1" if (folder / "img1").is_dir() else folder
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and is_image_name(p.name)), key=lambda p: _natural_key(p.name)
    )


def _camera_of(path: Path, kind: str, camera: Optional[str]) -> str:
    if camera:
        return camera
    return path.stem if kind == "video" else path.name


def find_sources(paths: Sequence[Union[str, Path]], camera: Optional[str] = None) -> Tuple[List[Source], list]:
    """Expand ``--video`` arguments: files, folders of videos (recursive) and folders of frames.

    Returns:
        (sources in argument order, folders sorted; ``[(path, reason)]`` refused). A folder
        holding video files gives those videos; one holding only images is one folder of frames.
    """
    sources, refused = [], []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            if is_video_name(path.name) or not is_image_name(path.name):
                sources.append(Source(str(path.resolve()), "video", _camera_of(path, "video", camera)))
            else:
                refused.append((str(path), "an image, not a video (index images with --images)"))
        elif path.is_dir():
            videos = [Path(d) / f for d, subdirs, files in os.walk(path) for f in files if is_video_name(f)]
            if videos:
                sources.extend(
                    Source(str(v.resolve()), "video", _camera_of(v, "video", camera)) for v in sorted(videos)
                )
            elif frame_files(path):
                sources.append(Source(str(path.resolve()), "frames", _camera_of(path.resolve(), "frames", camera)))
            else:
                refused.append((str(path), "folder holds no video files and no frames"))
        else:
            refused.append((str(path), "file not found"))
    return sources, refused


def folder_rate(folder: Path, frame_rate: Optional[float]) -> float:
    """The frame rate of a folder of frames: ``frame_rate``, else ``seqinfo.ini``'s frameRate."""
    if frame_rate:
        return float(frame_rate)
    for ini in (folder / "seqinfo.ini", folder.parent / "seqinfo.ini"):
        if ini.is_file():
            parser = configparser.ConfigParser()
            try:
                parser.read(ini, encoding="utf-8")
                return float(parser["Sequence"]["frameRate"])
            except (configparser.Error, KeyError, ValueError, UnicodeDecodeError) as exc:
                raise VideoError(f"{ini}: no usable frameRate ({exc})") from None
    raise VideoError(f"folder of frames {folder}: its frame rate is unknown (no seqinfo.ini); pass --frame-rate")


class FolderReader:
    """A folder of frames named in order, read as footage at ``frame_rate`` frames per second."""

    def __init__(self, folder: Union[str, Path], frame_rate: Optional[float] = None):
        self.path = str(folder)
        self.files = frame_files(Path(folder))
        if not self.files:
            raise VideoError(f"folder of frames {folder}: no image files")
        self.rate = folder_rate(Path(folder), frame_rate)
        first = _load_frame(self.files[0])
        if first is None:
            raise VideoError(f"folder of frames {folder}: its first frame {self.files[0].name} is unreadable")
        self.height, self.width = first.shape[:2]
        self.duration: Optional[float] = (len(self.files) - 1) / self.rate

    def close(self) -> None:
        pass

    def __enter__(self) -> FolderReader:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def expected_frames(self, fps: float) -> int:
        return int(len(self.files) * min(1.0, fps / self.rate)) + 1

    def frames(self, fps: float) -> Iterator[Frame]:
        taken, unreadable = 0, 0
        for position, path in enumerate(self.files):
            time = position / self.rate
            if time + 1e-6 < taken / fps:
                continue
            while taken / fps <= time + 1e-6:
                taken += 1
            image = _load_frame(path)
            if image is None or image.shape[:2] != (self.height, self.width):
                unreadable += 1
                continue
            yield Frame(position + 1, time, image)
        if unreadable:
            log.warning(
                "folder of frames %s: skipped %d unreadable or differently sized frame(s)", self.path, unreadable
            )


def _load_frame(path: Path) -> Optional[np.ndarray]:
    from ssan.data.images import load_rgb

    try:
        return np.asarray(load_rgb(path))
    except (SsanError, OSError, ValueError):
        return None


def open_source(source: Source, frame_rate: Optional[float] = None):
    """A :class:`~ssan.video.video_file.VideoReader` or :class:`FolderReader` for ``source``.

    ``frame_rate`` applies to folders of frames only.
    """
    from ssan.video.video_file import VideoReader

    return VideoReader(source.path) if source.kind == "video" else FolderReader(source.path, frame_rate)


def read_frame(path: Union[str, Path], kind: str, number: int, time: float) -> np.ndarray:
    """The frame ``number`` (at ``time`` seconds) of a source, as H x W x 3 uint8 (seeks, then decodes)."""
    if kind == "frames":
        files = frame_files(Path(path))
        image = _load_frame(files[number - 1]) if 1 <= number <= len(files) else None
        if image is None:
            raise VideoError(f"folder of frames {path}: frame {number} is missing or unreadable")
        return image
    from ssan.video.video_file import VideoReader

    with VideoReader(path) as reader:
        return reader.frame_at(time)
