"""Retention: each camera's tracks are kept for a set time (``retain: 30d``), then forgotten.

:func:`apply_retention` forgets, per camera, the tracks that ended before ``now - retain``
(one :func:`ssan.search.forget.forget`, hence one audit line, per camera with something to
forget); :class:`RetentionSchedule` runs it every ``every_s`` seconds in a daemon thread for
``ssan serve`` and ``ssan watch``.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Dict, Optional

from ssan.errors import SsanError
from ssan.search.forget import Selection
from ssan.search.index import read_meta
from ssan.search.store import is_url, open_store

log = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str = "retain") -> timedelta:
    """``90s``, ``15m``, ``12h``, ``30d``, ``2w`` as a timedelta (SsanError otherwise)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not found or float(found.group(1)) <= 0:
        raise SsanError(f"{what} {text!r} is not a duration such as 30d, 12h, 15m (s, m, h, d, w)")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


def apply_retention(
    directory, retain: Dict[Optional[str], timedelta], audit=None, now: Optional[datetime] = None
) -> int:
    """Forget what each camera keeps no longer (``retain[None]``: cameras not named); returns the items forgotten."""
    now = now or datetime.now(timezone.utc)
    store = open_store(directory)
    if is_url(directory):
        cameras = set(store.cameras())
    else:
        cameras = {e.get("camera") for e in read_meta(Path(directory))["entries"]} - {None}
    total = 0
    for camera in sorted(cameras):
        keep = retain.get(camera, retain.get(None))
        if keep is None:
            continue
        selection = Selection(camera=camera, before=now - keep)
        who = f"retention ({camera}: {keep})"
        total += store.forget(selection, who=who, audit=audit, quiet_if_none=True)["items"]
    return total


class RetentionSchedule:
    """Apply retention to ``directory`` now and every ``every_s`` seconds, in a daemon thread.

    Args:
        after: called with the number of items forgotten after each pass that forgot some
            (``ssan serve`` reloads its index there).
    """

    def __init__(self, directory, retain: dict, every_s: float, audit=None, after: Optional[Callable] = None):
        self.directory, self.retain, self.every_s, self.audit, self.after = directory, retain, every_s, audit, after
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ssan-retention", daemon=True)

    def start(self) -> RetentionSchedule:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                forgotten = apply_retention(self.directory, self.retain, self.audit)
                if forgotten and self.after is not None:
                    self.after(forgotten)
            except (SsanError, OSError) as exc:
                log.error("retention on %s failed (tried again in %.0f s): %s", self.directory, self.every_s, exc)
            self._stop.wait(self.every_s)
