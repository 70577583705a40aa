"""`ssan watch --store`: live tracks appended to a PostgreSQL store (crops in the folder), retention on it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from ssan.search.pgstore import PostgresStore
from ssan.search.retention import apply_retention
from ssan.video.cameras import Camera
from test_watch import street, watcher  # noqa: F401  (the 6 s street scene and its ground-truth detector)

pytestmark = pytest.mark.slow


def test_watched_tracks_go_to_the_store_and_retention_forgets_them_there(street, tmp_path, postgres_url):  # noqa: F811
    counts = watcher(street, tmp_path / "node", [Camera("street", str(street["video"]))], store=postgres_url).run(
        threading.Event()
    )
    store = PostgresStore(postgres_url)
    entries = list(store.entries())
    assert counts == {"street": len(entries)} and len(entries) >= 5
    assert all(e["path"].startswith(str(tmp_path / "node" / "crops")) for e in entries)
    assert not (tmp_path / "node" / "meta.json").exists()  # the folder holds crops only: no second index
    assert apply_retention(postgres_url, {None: timedelta(days=1)}) == 0  # all younger than a day
    later = datetime.now(timezone.utc) + timedelta(days=2)
    assert apply_retention(postgres_url, {None: timedelta(days=1)}, now=later) == len(entries)
    assert store.count() == 0 and store.audit_records()[-1]["forgotten"]["camera"] == "street"
