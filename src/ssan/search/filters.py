"""Narrowing a track search to cameras and a time window, inside the index search.

A :class:`TrackFilter` selects the tracks of the given cameras (any of them) that overlap the
window ``[after, before]`` (either end may be open): a track seen from ``utc_start`` to
``utc_end`` matches when ``utc_end >= after`` and ``utc_start <= before``. Tracks whose
wall-clock times are unknown (offsets only) never match a window. The rows that match are
computed from :class:`TrackColumns` (numpy columns of the entries, built once per index) and
the nearest neighbours are searched among those rows only (:func:`ssan.search.ann.search`),
so k results come back whenever at least k tracks match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Sequence, Tuple

import numpy as np

from ssan._time import parse_time
from ssan.errors import SsanError
from ssan.search.errors import QueryError


def _instant(text: Optional[str], what: str) -> Optional[datetime]:
    if text is None:
        return None
    try:
        return parse_time(text, what)
    except SsanError as exc:  # a query the caller can fix
        raise QueryError(str(exc)) from None


@dataclass(frozen=True)
class TrackFilter:
    """Cameras (empty: every camera) and an overlap window (None: open) of a track search."""

    cameras: Tuple[str, ...] = ()
    after: Optional[datetime] = None
    before: Optional[datetime] = None

    @classmethod
    def parse(
        cls, cameras: Optional[Sequence[str]] = None, after: Optional[str] = None, before: Optional[str] = None
    ) -> TrackFilter:
        """From the CLI's or the API's values (ISO 8601 times with zone); QueryError when unusable."""
        made = cls(tuple(cameras or ()), _instant(after, "after"), _instant(before, "before"))
        if made.after is not None and made.before is not None and made.after > made.before:
            raise QueryError(f"the window is empty: after {after} is later than before {before}")
        return made

    def __bool__(self) -> bool:
        return bool(self.cameras) or self.after is not None or self.before is not None


@dataclass
class TrackColumns:
    """Camera and UTC times of every entry as arrays (NaN where a time is unknown)."""

    cameras: np.ndarray  # N object (camera names; None for image entries)
    starts: np.ndarray  # N float64 POSIX seconds
    ends: np.ndarray
    codes: np.ndarray = field(init=False)  # N: the camera's number in ``names`` (-1: none)
    names: dict = field(init=False)  # camera name -> number

    @classmethod
    def of(cls, entries: list) -> TrackColumns:
        def seconds(text):
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else np.nan

        return cls(
            np.array([e.get("camera") for e in entries], dtype=object),
            np.array([seconds(e.get("utc_start")) for e in entries], dtype=np.float64),
            np.array([seconds(e.get("utc_end")) for e in entries], dtype=np.float64),
        )

    def __post_init__(self):
        names: dict = {}
        codes = [names.setdefault(c, len(names)) if c is not None else -1 for c in self.cameras]
        self.codes, self.names = np.asarray(codes, dtype=np.int64), names

    def rows(self, selection: TrackFilter) -> np.ndarray:
        """The sorted row numbers that ``selection`` keeps."""
        keep = np.ones(len(self.cameras), dtype=bool)
        if selection.cameras:
            wanted = [self.names[c] for c in selection.cameras if c in self.names]
            keep &= np.isin(self.codes, np.asarray(wanted, dtype=np.int64))
        if selection.after is not None:
            keep &= self.ends >= selection.after.timestamp()  # NaN compares False: unknown times never match
        if selection.before is not None:
            keep &= self.starts <= selection.before.timestamp()
        return np.flatnonzero(keep).astype(np.int64)
