"""The track store interface (add, search with filters, forget, iterate), one suite for every store kind.

The index folder (FAISS) and PostgreSQL + pgvector (a real server: :mod:`postgres`) pass the same cases.
"""

from __future__ import annotations

import numpy as np
import pytest

from ssan.errors import SsanError
from ssan.search import ann
from ssan.search.builder import index_meta
from ssan.search.filters import TrackFilter
from ssan.search.forget import Selection
from ssan.search.store import FolderStore, open_store

STORES = {
    "folder": lambda request, tmp_path: open_store(tmp_path / "idx"),
    "postgres": lambda request, tmp_path: open_store(request.getfixturevalue("postgres_url")),
}


class _Info:
    checkpoint, fingerprint, backend, height, width, max_length = "ckpt", "f" * 16, "torch", 32, 16, 20
    arch: dict = {}


def _tracks(camera: str, start_hour: int, count: int, rng) -> tuple:
    entries = [
        {"path": f"/nowhere/{camera}-{i}.jpg", "name": f"{camera}/track {i}", "id": None, "kind": "track",
         "track": i, "camera": camera, "video": f"{camera}.mp4",
         "utc_start": f"2026-12-01T{start_hour:02d}:{i:02d}:00.000Z",
         "utc_end": f"2026-12-01T{start_hour:02d}:{i:02d}:30.000Z"}
        for i in range(count)
    ]  # fmt: skip
    vectors = rng.standard_normal((count, 8)).astype(np.float32)
    return entries, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(params=sorted(STORES))
def store(request, tmp_path):
    return STORES[request.param](request, tmp_path)


def _new_meta() -> dict:
    layout = {"terms": ["global"], "widths": [8], "dim": 8}
    meta = index_meta(_Info, layout, ann.IndexSpec(), [], [], [])
    return {**meta, "content": "tracks"}


def test_add_search_with_filters_forget_and_iterate(store):
    rng = np.random.default_rng(0)
    gate, gate_vectors = _tracks("gate", 8, 30, rng)
    yard, yard_vectors = _tracks("yard", 9, 20, rng)
    assert store.add(gate, gate_vectors, [{"path": "gate.mp4", "camera": "gate"}], _new_meta()) == 30
    assert store.add(yard, yard_vectors, [{"path": "yard.mp4", "camera": "yard"}], _new_meta()) == 50
    query = yard_vectors[3:4]
    scores, rows = store.search(query, 5, TrackFilter(("yard",)))
    entries = list(store.entries())
    assert len(rows[0]) == 5 and entries[rows[0][0]]["path"] == yard[3]["path"]
    assert {entries[r]["camera"] for r in rows[0]} == {"yard"}
    window = TrackFilter.parse(after="2026-12-01T08:10:00Z", before="2026-12-01T08:19:59Z")
    assert sorted(entries[r]["track"] for r in store.search(query, 50, window)[1][0]) == list(range(10, 20))
    assert store.forget(Selection(camera="gate"))["items"] == 30
    assert [e["camera"] for e in store.entries()] == ["yard"] * 20
    assert store.search(query, 5, TrackFilter(("gate",)))[1].shape == (1, 0)


def test_a_url_for_a_store_not_built_is_refused_by_name(tmp_path):
    with pytest.raises(SsanError, match="no track store for mysql:// URLs"):
        open_store("mysql://localhost/ssan")
    assert isinstance(open_store(f"file://{tmp_path}"), FolderStore)
