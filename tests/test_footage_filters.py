"""Filtered track search: cameras and a time window, exact inside the index search, on every index kind."""

from __future__ import annotations

import json

import numpy as np
import pytest

from footage import build_two_cameras
from helpers import run_cli
from ssan.search import ann
from ssan.search.errors import QueryError
from ssan.search.filters import TrackColumns, TrackFilter
from ssan.search.index import GalleryIndex


def _entries(count: int, rng) -> list:
    """Tracks of 3 cameras, ``rare`` holding 1 %; one per minute from 08:00 UTC, 30 s long."""
    cameras = np.where(rng.random(count) < 0.01, "rare", np.where(rng.random(count) < 0.5, "north", "south"))
    entries = []
    for row, camera in enumerate(cameras):
        minute = row % 600
        entries.append(
            {
                "kind": "track",
                "camera": str(camera),
                "utc_start": f"2026-12-01T{8 + minute // 60:02d}:{minute % 60:02d}:00.000Z",
                "utc_end": f"2026-12-01T{8 + minute // 60:02d}:{minute % 60:02d}:30.000Z",
            }
        )
    return entries


def _naive(features, query, rows, k):
    scores = features[rows] @ query
    order = np.lexsort((rows, -scores))[:k]
    return rows[order]


@pytest.mark.parametrize("kind", ["flat", "ivfpq", "hnsw"])
@pytest.mark.parametrize("force_selector", [False, True])
def test_a_camera_with_one_percent_of_the_tracks_gives_k_results(kind, force_selector, monkeypatch):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((4000, 32)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    entries = _entries(len(features), rng)
    if force_selector:  # every selection goes through FAISS's IDSelector (and its exact fallback)
        monkeypatch.setattr(ann, "SUBSET_SCAN_ROWS", 0)
        monkeypatch.setattr(ann, "SMALL_SCAN_ROWS", 0)
    spec = ann.IndexSpec(kind=kind, nlist=32, m=8, nprobe=2) if kind == "ivfpq" else ann.IndexSpec(kind=kind)
    faiss_index, spec = ann.build(features, spec)
    meta = {"index": {"kind": kind, "params": spec.to_dict()}, "entries": entries, "layout": {"dim": 32}}
    index = GalleryIndex(meta, features, faiss_index)
    rows = TrackColumns.of(entries).rows(TrackFilter(("rare",)))
    assert 20 <= len(rows) <= 60  # about 1 %
    queries = rng.standard_normal((5, 32)).astype(np.float32)
    scores, found = index.search(queries, 20, rows=rows)
    assert found.shape == (5, 20) and (found >= 0).all()
    assert all(entries[r]["camera"] == "rare" for r in found.ravel())
    for q, query in enumerate(queries):
        assert np.allclose(np.sort(scores[q])[::-1], scores[q])
        if kind == "flat" or not force_selector:  # exact: the naive top-k of the selection
            assert found[q].tolist() == _naive(features, query, rows, 20).tolist()
    few = rows[:7]
    assert index.search(queries, 20, rows=few)[1].shape == (5, 7)  # fewer match than k: all of them


def test_a_track_matches_a_window_it_overlaps():
    entries = [
        {"camera": "a", "utc_start": "2026-12-01T08:00:00Z", "utc_end": "2026-12-01T08:01:00Z"},
        {"camera": "a", "utc_start": "2026-12-01T08:05:00Z", "utc_end": "2026-12-01T08:06:00Z"},
        {"camera": "b", "utc_start": "2026-12-01T08:00:30Z", "utc_end": "2026-12-01T08:10:00Z"},
        {"camera": "b"},  # offsets only: never in a window
    ]
    columns = TrackColumns.of(entries)

    def rows(**kwargs):
        return columns.rows(TrackFilter.parse(**kwargs)).tolist()

    assert rows(after="2026-12-01T08:00:59Z", before="2026-12-01T08:05:00Z") == [0, 1, 2]
    assert rows(after="2026-12-01T08:01:01Z", before="2026-12-01T08:04:59Z") == [2]
    assert rows(after="2026-12-01T09:06:00+01:00") == [1, 2]
    assert rows(cameras=["b"]) == [2, 3]
    assert rows(cameras=["b", "a"], before="2026-12-01T08:00:00Z") == [0]
    assert rows(cameras=["nowhere"]) == []
    with pytest.raises(QueryError, match="the window is empty"):
        TrackFilter.parse(after="2026-12-01T09:00:00Z", before="2026-12-01T08:00:00Z")
    with pytest.raises(QueryError, match="no zone"):
        TrackFilter.parse(after="2026-12-01T09:00:00")


@pytest.fixture(scope="module")
def two_cameras(prepared_synth, tmp_path_factory):
    return build_two_cameras(tmp_path_factory.mktemp("filters"), prepared_synth)


def test_search_cli_narrows_to_a_camera_and_a_window(two_cameras):
    def cameras_of(*args):
        """The cameras of the results (the two cameras' tracks tie: same video, so sorted)."""
        code, out, err = run_cli("search", "--index", two_cameras, "a man", "-k", "10", "--json", *args)
        assert code == 0, err
        return sorted(r["camera"] for r in json.loads(out)["results"])

    everything = cameras_of()
    assert everything == ["gate"] * 3 + ["yard"] * 3
    assert cameras_of("--camera", "yard") == ["yard"] * 3
    assert cameras_of("--camera", "yard", "--camera", "gate") == everything
    assert cameras_of("--after", "2026-12-01T08:30:00Z") == ["yard"] * 3
    assert cameras_of("--before", "2026-12-01T08:00:01Z", "--camera", "gate") == ["gate"] * 3  # all start by 1 s
    assert cameras_of("--camera", "gate", "--after", "2026-12-01T08:30:00Z") == []
    code, _, err = run_cli("search", "--index", two_cameras, "a man", "--after", "noon")
    assert code == 2 and "is not an ISO 8601 time" in err


def test_api_and_page_take_the_filters(two_cameras, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ssan.search import Searcher
    from ssan.search.app import create_app
    from ssan.search.audit import AuditLog
    from ssan.search.security import Security

    audit = tmp_path / "audit.jsonl"
    app = create_app(Searcher(two_cameras), Security(tokens=None, audit=AuditLog(audit)))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/cameras").json() == {"cameras": ["gate", "yard"]}
        body = {"query": "a man", "k": 10, "cameras": ["gate"], "before": "2026-12-01T08:00:02Z"}
        answer = client.post("/api/search", json=body).json()
        assert {r["camera"] for r in answer["results"]} == {"gate"} and answer["results"]
        assert all(r["time_base"] == "utc" and r["start"] <= "2026-12-01T08:00:02" for r in answer["results"])
        bad = client.post("/api/search", json={"query": "a man", "after": "later"})
        assert bad.status_code == 400 and "ISO 8601" in bad.json()["detail"]
        page = client.get("/").text + client.get("/static/app.js").text
        assert 'id="cameras"' in page and "filterValues()" in page
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    assert lines[0]["filters"] == {"cameras": ["gate"], "after": None, "before": "2026-12-01T08:00:02Z"}
