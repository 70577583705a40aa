"""Track entries of an index built from footage (``ssan index --video``): their fields and files.

A track entry is a gallery entry whose ``path`` is the track's best crop (a JPEG in the
index folder's ``crops/``, so anything that shows gallery images shows tracks) and which
adds::

    "kind": "track", "track": id in its source, "camera": name, "video": source path,
    "source_kind": "video" | "frames", "start" / "end": seconds, "first_frame" / "last_frame",
    "boxes_seen": boxes over the sampled frames, and for its kept crops (best first):
    "frames": [1-based frame numbers], "times": [seconds], "boxes": [[x, y, w, h] pixels],
    and when the source's wall-clock start was known (:mod:`ssan.video.clock`):
    "utc_start" / "utc_end": ISO 8601 UTC times.

Search results present the times (:func:`track_fields`): "start" / "end" are the ISO 8601 UTC
times and "time_base" is "utc" when the wall-clock start is known; otherwise (sources without a
known start, indexes made before wall-clock times) they are the offsets and "time_base" is
"offset". "offset_start" / "offset_end" are always the seconds in the file (a clip seeks there).

Nothing here reads video: :func:`ssan.video.track_frame` decodes a track's frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ssan.search.files import is_video_name

TRACK_FIELDS = (
    "kind",
    "track",
    "camera",
    "start",
    "end",
    "first_frame",
    "last_frame",
    "boxes_seen",
    "frames",
    "times",
    "boxes",
    "video",
    "source_kind",
)


def is_track(entry: dict) -> bool:
    return entry.get("kind") == "track"


def track_fields(entry: dict) -> dict:
    """The track fields of an entry as search results show them (``{}`` for an image entry).

    ``start`` / ``end``: ISO 8601 UTC when the entry has them, else its offsets;
    ``offset_start`` / ``offset_end``: the offsets in the file, always.
    """
    if not is_track(entry):
        return {}
    fields = {name: entry[name] for name in TRACK_FIELDS if name in entry}
    offsets = {"offset_start": float(entry["start"]), "offset_end": float(entry["end"])}
    if entry.get("utc_start"):
        return {**fields, **offsets, "start": entry["utc_start"], "end": entry["utc_end"], "time_base": "utc"}
    return {**fields, **offsets, "start": offsets["offset_start"], "end": offsets["offset_end"], "time_base": "offset"}


def video_file(entry: dict) -> Optional[Path]:
    """The video file of a track entry, or None (not a track, a folder of frames, or no longer safe to serve).

    The file must still be the regular video file recorded at indexing time: a path that
    now resolves elsewhere (a link swapped in later) is refused.
    """

    if not is_track(entry) or entry.get("source_kind") != "video":
        return None
    recorded = Path(entry["video"])
    try:
        resolved = recorded.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if resolved != recorded or not resolved.is_file() or not is_video_name(resolved.name):
        return None
    return resolved
