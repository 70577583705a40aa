"""Wall-clock time of footage: the UTC instant each source starts, and ISO 8601 times of tracks.

A source's start is, in this order: ``--start-time`` (one instant for the sources given), a
time in its file name (``--time-from-name '%Y%m%d_%H%M%S'``), its container's
``creation_time``, or, for a live stream, the clock when its first frame is received. A track
entry then stores ``utc_start`` / ``utc_end`` (start + its offsets) beside ``start`` / ``end``
(seconds from the start of the file); search results show the UTC times as ``start`` / ``end``
(:func:`ssan.search.tracks.track_fields`). A source with none of these, and every index made
before this, has offsets only (``time_base: "offset"``).
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from ssan._time import iso, parse_time
from ssan.errors import SsanError

_FIELDS = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}", "%M": r"\d{2}", "%S": r"\d{2}"}


def shifted(start_iso: str, seconds: float) -> str:
    """The ISO time ``seconds`` after the ISO time ``start_iso``."""
    return iso(parse_time(start_iso) + timedelta(seconds=float(seconds)))


def check_name_pattern(pattern: str) -> re.Pattern:
    """The regular expression finding a ``strftime`` pattern (``%Y %m %d %H %M %S`` only) in a name."""
    unknown = set(re.findall(r"%.", pattern)) - set(_FIELDS)
    if unknown or "%Y" not in pattern:
        raise SsanError(
            f"--time-from-name {pattern!r}: use %Y (required) %m %d %H %M %S and literal characters"
            + (f" (not {', '.join(sorted(unknown))})" if unknown else "")
        )
    parts = re.split(r"(%[YmdHMS])", pattern)
    return re.compile("".join(_FIELDS.get(part, re.escape(part)) for part in parts))


def time_from_name(path: str, pattern: str) -> datetime:
    """The UTC instant written in the file name of ``path`` by ``pattern`` (times in names are taken as UTC)."""
    name = Path(path).name
    found = check_name_pattern(pattern).search(name)
    try:
        if found is None:
            raise ValueError
        return datetime.strptime(found.group(0), pattern).replace(tzinfo=timezone.utc)
    except ValueError:
        raise SsanError(f"{path}: its name holds no time matching --time-from-name {pattern!r}") from None


def container_time(path: str) -> Optional[datetime]:
    """The ``creation_time`` a video container records (format or first video stream), or None."""
    from ssan.video._deps import av_module

    av = av_module()
    try:
        with av.open(str(path)) as container:
            stated = container.metadata.get("creation_time")
            if stated is None and container.streams.video:
                stated = container.streams.video[0].metadata.get("creation_time")
    except (av.FFmpegError, OSError):
        return None
    try:
        return parse_time(stated) if stated else None
    except SsanError:
        return None


def source_start(path: str, kind: str, start_time: Optional[str], name_pattern: Optional[str]) -> tuple:
    """``(ISO start or None, how)`` of a file source; ``how`` is ``start-time``, ``name``, ``creation_time`` or None."""
    if start_time is not None:
        return iso(parse_time(start_time, "--start-time")), "start-time"
    if name_pattern is not None:
        return iso(time_from_name(path, name_pattern)), "name"
    stated = container_time(path) if kind == "video" else None
    return (iso(stated), "creation_time") if stated is not None else (None, None)


def dated(source, start_time: Optional[str], name_pattern: Optional[str]):
    """``source`` (a :class:`ssan.video.frames.Source`) with its ``start_utc`` and ``time_source`` set."""
    start, how = source_start(source.path, source.kind, start_time, name_pattern)
    return dataclasses.replace(source, start_utc=start, time_source=how)
