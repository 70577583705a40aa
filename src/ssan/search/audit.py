"""The audit log of the search service: who searched for what, and which images they were shown.

One JSON object per line, one line per search (``POST /api/search``) and per image request
(``GET /api/images/{id}``; for footage also ``/api/clips/{id}`` and ``/api/frames/{id}``) that
passed authentication::

    {"time": "2025-01-31T09:12:03.141Z", "client": "127.0.0.1", "user": "alice",
     "token": "3f1c0a9b2e7d", "method": "POST", "path": "/api/search",
     "query": "a woman in a red coat", "k": 10, "image_ids": [17, 4, 230], "status": 200}

``time`` is UTC; ``client`` the peer address; ``user`` the token's name in a multi-user token
file (None otherwise); ``token`` the token's fingerprint, never the token; ``image_ids`` the
images returned (a search) or served (an image, empty when refused); ``query`` and ``k`` are
None when the request never reached the search (422). The line is written when the response
starts, before any result leaves the service: when it cannot be written, the request gets 503.
Each line is one ``write`` to a file opened for appending (mode 0600) under a lock, so lines
never interleave; the file is rotated (``audit.jsonl.1`` ... ``.N``) before it would pass
``max_bytes``. Every line also carries ``prev`` and ``hash``, a SHA-256 chain across rotations
that shows any change (:mod:`ssan.search.audit_chain`; ``ssan audit verify LOG``). Other
processes may append to the same log (``ssan forget`` records each erasure there): the
write, with its chain link, happens under an exclusive ``flock`` of the file.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from ssan.errors import SsanError
from ssan.search.audit_chain import last_link, seal
from ssan.search.limits import send_json
from ssan.search.tokens import IDENTITY_KEY

log = logging.getLogger(__name__)

NOTE_KEY = "ssan.audit"
MIN_MAX_BYTES = 16 * 1024  # above the longest line the service can write (1,000-character query, k=100)


class AuditLog:
    """An append-only JSON-lines file, size-bounded by rotation, safe to write from many threads.

    Args:
        path: the log file (created with mode 0600 when missing; its folder must exist).
        max_bytes: rotate before the file would pass this size; 0 never rotates.
        backups: rotated files kept (``PATH.1`` newest ... ``PATH.<backups>`` oldest).
    """

    def __init__(self, path, max_bytes: int = 10_000_000, backups: int = 3):
        if max_bytes and max_bytes < MIN_MAX_BYTES:
            raise SsanError(f"the audit log size bound must be 0 (none) or at least {MIN_MAX_BYTES} bytes")
        if backups < 1:
            raise SsanError(f"the audit log keeps at least 1 rotated file, got {backups}")
        self.path = Path(path)
        self.max_bytes = int(max_bytes)
        self.backups = int(backups)
        self._lock = threading.Lock()
        try:
            self._fd = self._open()
        except OSError as exc:
            raise SsanError(f"cannot open the audit log {self.path}: {exc.strerror}") from None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _rotate(self) -> None:
        """Shift ``PATH.i`` to ``PATH.i+1`` (the oldest is replaced), ``PATH`` to ``PATH.1``, start anew."""
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{number}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _locked_current(self) -> None:
        """Hold an exclusive lock on the file now at ``path`` (another process may have rotated it)."""
        while True:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(self._fd)
            if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                return
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            fd, self._fd = self._fd, self._open()
            os.close(fd)

    def write(self, record: dict) -> None:
        """Append ``record`` as one chained line; OSError when it could not be written."""
        with self._lock:
            self._locked_current()
            try:
                line = seal(record, last_link(self.path))
                size = os.fstat(self._fd).st_size
                if self.max_bytes and size and size + len(line) > self.max_bytes:
                    self._rotate()
                    self._locked_current()
                    line = seal(record, last_link(self.path))  # another writer may have gone first
                view = memoryview(line)
                while view:
                    view = view[os.write(self._fd, view) :]
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._lock:
            os.close(self._fd)


def note(scope: dict, **fields) -> None:
    """Add ``fields`` (``query``, ``k``, ``image_ids``) to the audit line of the request, if audited."""
    record = scope.get(NOTE_KEY)
    if record is not None:
        record.update(fields)


_MEDIA_PREFIXES = ("/api/images/", "/api/clips/", "/api/frames/")


def _audited(scope: dict) -> bool:
    """Whether a request gets an audit line: a search, or a request for an image, a clip or a frame.

    Every request for a clip is a line (a browser playing one asks for several byte ranges: 206).
    """
    path, method = scope["path"], scope["method"]
    return (path == "/api/search" and method == "POST") or (
        path.startswith(_MEDIA_PREFIXES) and method in ("GET", "HEAD")
    )


def _record(scope: dict, noted: dict, status: int) -> dict:
    identity = scope.get(IDENTITY_KEY)
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "time": now,
        "client": (scope.get("client") or (None,))[0],
        "user": identity.name if identity else None,
        "token": identity.fingerprint if identity else None,
        "method": scope["method"],
        "path": scope["path"],
        "query": noted.get("query"),
        "k": noted.get("k"),
        "image_ids": noted.get("image_ids", []),
        "status": status,
        **({"filters": noted["filters"]} if "filters" in noted else {}),  # a footage search's cameras and window
    }


class AuditMiddleware:
    """Write one :class:`AuditLog` line per search and image request, as the response starts.

    The routes add what only they know with :func:`note`; the status is the one sent.
    """

    def __init__(self, app, audit: AuditLog):
        self.app = app
        self.audit = audit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _audited(scope):
            await self.app(scope, receive, send)
            return
        noted: dict = {}
        scope[NOTE_KEY] = noted
        failed = False

        async def send_audited(message):
            nonlocal failed
            if message["type"] == "http.response.start":
                try:
                    self.audit.write(_record(scope, noted, message["status"]))
                except OSError as exc:
                    log.error("cannot write the audit log %s: %s; refusing the request", self.audit.path, exc)
                    failed = True
                    await send_json(send, 503, {"detail": "the audit log cannot be written"})
                    return
            if not failed:
                await send(message)

        await self.app(scope, receive, send_audited)
