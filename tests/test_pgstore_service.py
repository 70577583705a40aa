"""Footage on a shared PostgreSQL store: published tracks, search and the service, outages as 503."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from footage import build_two_cameras
from helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_cameras(prepared_synth, tmp_path_factory):
    return build_two_cameras(tmp_path_factory.mktemp("pgfootage"), prepared_synth)


def _answer(location, *args):
    code, out, err = run_cli("search", "--index", str(location), "a man", "-k", "10", "--json", *args)
    assert code == 0, err
    return [(r["image_id"], round(r["score"], 5), r["camera"], r["start"]) for r in json.loads(out)["results"]]


def test_published_tracks_search_like_the_folder_with_filters_and_forget(two_cameras, postgres_url):
    from ssan.search.index import GalleryIndex
    from ssan.search.store_index import publish

    index = GalleryIndex.load(two_cameras)
    assert publish(index, postgres_url) == len(index) == 6
    assert publish(index, postgres_url) == 0  # sources already there: nothing twice
    late = ("--after", "2026-12-01T08:30:00Z")
    for args in ((), ("--camera", "yard"), late, ("--camera", "gate", *late)):
        assert sorted(_answer(postgres_url, *args)) == sorted(_answer(two_cameras, *args))  # pairs tie: same video
    code, out, err = run_cli("forget", "--store", postgres_url, "--camera", "gate")
    assert code == 0 and "forgot 3 item(s)" in out, err
    assert {r[2] for r in _answer(postgres_url)} == {"yard"}


def test_the_service_answers_503_while_the_database_is_away_and_recovers(two_cameras, postgres_url, postgres_server):
    pytest.importorskip("fastapi")
    import psycopg
    from fastapi.testclient import TestClient

    from ssan.search import Searcher
    from ssan.search.app import create_app
    from ssan.search.index import GalleryIndex
    from ssan.search.security import Security
    from ssan.search.store_index import publish

    publish(GalleryIndex.load(two_cameras), postgres_url)
    app = create_app(Searcher(postgres_url), Security(tokens=None, audit=None))
    name = urlsplit(postgres_url).path.lstrip("/")
    with (
        TestClient(app, base_url="http://127.0.0.1") as client,
        psycopg.connect(postgres_server, autocommit=True) as db,
    ):
        assert client.get("/api/cameras").json() == {"cameras": ["gate", "yard"]}
        assert (
            len(client.post("/api/search", json={"query": "a man", "k": 4, "cameras": ["yard"]}).json()["results"]) == 3
        )
        db.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        away = client.post("/api/search", json={"query": "a man", "k": 4})
        assert away.status_code == 503 and "unavailable" in away.json()["detail"]
        assert "\n" not in away.json()["detail"]
        db.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        assert client.post("/api/search", json={"query": "a man", "k": 4}).status_code == 200


def test_two_serve_processes_share_one_database_and_see_an_erasure(two_cameras, postgres_url):
    pytest.importorskip("fastapi")
    import re

    import httpx

    from servers import cli_server
    from ssan.search.index import GalleryIndex
    from ssan.search.store_index import publish

    publish(GalleryIndex.load(two_cameras), postgres_url)
    args = ("--store", postgres_url, "--no-auth", "--no-audit-log", "--threads", "1")
    with cli_server(*args) as (_, first), cli_server(*args) as (_, second):
        ports = [re.search(r"127\.0\.0\.1:(\d+)", line).group(1) for line in (first, second)]

        def cameras(port):
            answer = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"query": "a man", "k": 10}, timeout=60)
            assert answer.status_code == 200, answer.text
            return sorted(r["camera"] for r in answer.json()["results"])

        assert cameras(ports[0]) == cameras(ports[1]) == ["gate"] * 3 + ["yard"] * 3
        code, out, err = run_cli("forget", "--store", postgres_url, "--camera", "yard")
        assert code == 0, err
        assert cameras(ports[0]) == cameras(ports[1]) == ["gate"] * 3  # neither restarted


def test_index_video_with_store_adds_new_tracks_once(two_cameras, postgres_url, tmp_path):
    base = two_cameras.parent
    args = ["index", "--checkpoint", base / "model.pt", "--video", base / "gate.mp4", "--keep-ids", "--no-progress"]
    args += ["--detections", base / "scene" / "gt" / "gt.txt", "--fps", "10", "--out", tmp_path / "node"]
    code, out, err = run_cli(*args, "--store", postgres_url)
    assert code == 0 and "store: 3 new track(s) added" in out, err
    code, out, err = run_cli(*args, "--add", "--store", postgres_url)
    assert code == 0 and "store: 0 new track(s) added" in out, err
    assert sorted(r[2] for r in _answer(postgres_url)) == ["gate"] * 3
