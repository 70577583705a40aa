"""ISO 8601 instants with their zone, as aware UTC datetimes (footage times, search windows)."""

from __future__ import annotations

from datetime import datetime, timezone

from ssan.errors import SsanError


def parse_time(text: str, what: str = "time") -> datetime:
    """An ISO 8601 instant with its zone (``2026-12-01T08:00:00Z``, ``...+01:00``) as an aware UTC datetime."""
    value = str(text).strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise SsanError(f"{what} {text!r} is not an ISO 8601 time such as 2026-12-01T08:00:00Z") from None
    if moment.tzinfo is None:
        raise SsanError(f"{what} {text!r} has no zone: add Z (UTC) or an offset such as +01:00")
    return moment.astimezone(timezone.utc)


def iso(moment: datetime) -> str:
    """``2026-12-01T08:00:01.250Z``: UTC, milliseconds."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
