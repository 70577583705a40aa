"""Erasure and retention: `ssan forget`, per-camera retention, and a searcher that follows the index."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from footage import build_two_cameras
from helpers import run_cli
from ssan.search import Searcher
from ssan.search.audit import AuditLog
from ssan.search.audit_chain import verify
from ssan.search.forget import Selection, forget
from ssan.search.index import GalleryIndex
from ssan.search.retention import RetentionSchedule, apply_retention, parse_duration
from ssan.video.cameras import read_cameras, retention_of


@pytest.fixture
def two_cameras(prepared_synth, tmp_path):
    return build_two_cameras(tmp_path / "base", prepared_synth)


def crops_of(index: GalleryIndex, camera: str) -> list:
    return [e["path"] for e in index.entries if e["camera"] == camera]


def test_forget_a_camera_removes_its_vectors_crops_and_entries_for_good(two_cameras, tmp_path):
    before = GalleryIndex.load(two_cameras)
    gate_crops = crops_of(before, "gate")
    code, out, err = run_cli("forget", "--index", two_cameras, "--camera", "gate")
    assert code == 0, err
    assert "forgot 3 item(s) and 3 crop file(s); 3 left" in out
    after = GalleryIndex.load(two_cameras)
    assert [e["camera"] for e in after.entries] == ["yard"] * 3 and after.features.shape[0] == 3
    assert not any(Path(p).exists() for p in gate_crops) and all(Path(p).exists() for p in crops_of(after, "yard"))
    assert sorted(p.name for p in (two_cameras / "crops").iterdir()) == sorted(
        Path(p).name for p in crops_of(after, "yard")
    )
    stored = [np.load(p) for p in two_cameras.glob("*.npy")]  # what someone reading the disk would find
    assert [a.shape[0] for a in stored] == [3]
    code, out, _ = run_cli("search", "--index", two_cameras, "a man", "--json", "--camera", "gate")
    assert code == 0 and json.loads(out)["results"] == []
    [line] = [json.loads(x) for x in (two_cameras / "audit.jsonl").read_text().splitlines()]
    assert (line["command"], line["forgotten"], line["items"], line["crops"]) == (
        "ssan forget",
        {"camera": "gate"},
        3,
        3,
    )
    assert verify(two_cameras / "audit.jsonl").ok


def test_a_forgotten_file_is_not_indexed_again_by_add(two_cameras, caplog):
    from ssan.video import IngestOptions, build_track_index

    assert run_cli("forget", "--index", two_cameras, "--camera", "gate")[0] == 0
    base = two_cameras.parent
    with caplog.at_level(logging.WARNING, logger="ssan"):
        index = build_track_index(
            two_cameras, base / "model.pt", [base / "gate.mp4"], detections=base / "scene" / "gt" / "gt.txt",
            options=IngestOptions(fps=10, keep_ids=True, keep=2), add=True, progress=False,
        )  # fmt: skip
    assert [e["camera"] for e in index.entries] == ["yard"] * 3
    assert "not indexed again: 1 source(s) whose tracks were forgotten" in caplog.text
    source = next(s for s in index.meta["sources"] if s["camera"] == "gate")
    assert source["forgotten"]["tracks"] == 3


def test_forget_before_a_time_and_one_track(two_cameras):
    assert run_cli("forget", "--index", two_cameras, "--before", "2026-12-01T08:30:00Z")[0] == 0
    assert {e["camera"] for e in GalleryIndex.load(two_cameras).entries} == {"yard"}
    track = GalleryIndex.load(two_cameras).entries[1]
    code, out, _ = run_cli("forget", "--index", two_cameras, "--track", "1")
    assert code == 0 and "forgot 1 item(s)" in out
    left = GalleryIndex.load(two_cameras).entries
    assert len(left) == 2 and track["path"] not in [e["path"] for e in left]
    lines = [json.loads(x) for x in (two_cameras / "audit.jsonl").read_text().splitlines()]
    assert [line["forgotten"] for line in lines] == [{"before": "2026-12-01T08:30:00.000Z"}, {"track": 1}]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--track", "99"], "--track 99: no such id (the index holds 6)"),
        (["--image", "0"], "--image 0: this index holds tracks"),
        (["--track", "1", "--camera", "gate"], "say what to forget"),
        ([], "say what to forget"),
        (["--before", "noon"], "is not an ISO 8601 time"),
    ],
)
def test_bad_erasures_are_one_line_errors_and_change_nothing(two_cameras, args, message):
    meta = (two_cameras / "meta.json").read_text()
    code, _, err = run_cli("forget", "--index", two_cameras, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (two_cameras / "meta.json").read_text() == meta


def test_forget_an_image_of_a_compressed_index_keeps_its_training(tmp_path):
    from ssan.search import ann

    rng = np.random.default_rng(0)
    features = rng.standard_normal((600, 16)).astype(np.float32)
    spec = ann.IndexSpec(kind="ivfpq", nlist=8, m=4, nbits=4)
    faiss_index, spec = ann.build(features, spec)
    entries = [{"path": f"/gallery/{i}.jpg", "name": f"{i}.jpg", "id": None} for i in range(600)]
    meta = {"format": "ssan-index", "version": 1, "fingerprint": "f", "encode": {}, "checkpoint": "c"}
    meta.update({"index": {"kind": "ivfpq", "params": spec.to_dict(), "recall_queries": "images"}})
    meta.update({"entries": entries, "layout": {"dim": 16}, "sources": []})
    GalleryIndex(meta, features, faiss_index, queries=features[:10]).save(tmp_path / "idx")
    report = forget(tmp_path / "idx", Selection(image=5))
    assert report == {"items": 1, "crops": 0, "left": 599}
    after = GalleryIndex.load(tmp_path / "idx")
    assert after.faiss_index.ntotal == 599 and after.queries is None  # the sample held gallery vectors
    assert "/gallery/5.jpg" not in [e["path"] for e in after.entries]
    scores, rows = after.search(features[6], 1)
    assert rows[0, 0] == 5  # image 6 is now row 5, found by its own vector


def test_a_running_searcher_follows_erasures_and_drops_cached_frames(two_cameras):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ssan.search.app import create_app
    from ssan.search.security import Security

    searcher = Searcher(two_cameras)
    app = create_app(searcher, Security(tokens=None, audit=None))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/frames/0").status_code == 200
        assert len(client.post("/api/search", json={"query": "a man", "k": 10}).json()["results"]) == 6
        forget(two_cameras, Selection(camera="yard"))
        answer = client.post("/api/search", json={"query": "a man", "k": 10}).json()
        assert {r["camera"] for r in answer["results"]} == {"gate"} and len(answer["results"]) == 3
        assert searcher.generation == 1 and client.get("/api/frames/3").status_code == 404
        assert client.get("/api/frames/0").status_code == 200


def test_the_frame_cache_empties_when_the_index_is_reloaded():
    from ssan.search.media import FrameCache

    rendered = []
    cache = FrameCache(render=lambda track: rendered.append(track["n"]) or b"jpeg")
    cache.get(1, {"n": "a"}, 0)
    cache.get(2, {"n": "b"}, 0)
    assert cache.get(1, {"n": "a"}, 0) == b"jpeg" and rendered == ["a", "b"] and len(cache) == 2
    cache.get(1, {"n": "c"}, 1)  # generation 1: row 1 is another track now; old frames are dropped
    assert rendered == ["a", "b", "c"] and len(cache) == 1


@pytest.mark.parametrize(
    "args, message",
    [(["--retain", "soon"], "--retain 'soon' is not a duration"), (["--cameras", "nowhere.yaml"], "cannot read")],
)
def test_serve_refuses_bad_retention_options(two_cameras, args, message):
    code, _, err = run_cli("serve", "--index", two_cameras, "--no-audit-log", "--port", "0", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_readers_never_see_a_half_written_index(two_cameras):
    searcher = Searcher(two_cameras)
    errors, counts, done = [], [], threading.Event()

    def read():
        while not done.is_set():
            try:
                counts.append(len(searcher.search("a man", k=10)["results"]))
            except Exception as exc:  # noqa: BLE001 - any failure of a reader fails the test
                errors.append(repr(exc))

    reader = threading.Thread(target=read)
    reader.start()
    for _ in range(4):
        forget(two_cameras, Selection(track=0))
        time.sleep(0.05)
    done.set()
    reader.join(timeout=30)
    assert errors == [] and set(counts) <= {6, 5, 4, 3, 2} and counts[-1] == 2


def test_retention_per_camera_from_cameras_yaml(two_cameras, tmp_path):
    cameras = tmp_path / "cameras.yaml"
    cameras.write_text(
        "cameras:\n  - {name: gate, url: rtsp://127.0.0.1:8554/gate, retain: 1h}\n  - {name: yard, url: yard.mp4}\n"
    )
    plan = retention_of(read_cameras(cameras), None)
    assert plan == {"gate": timedelta(hours=1)}
    audit = AuditLog(two_cameras / "audit.jsonl")
    now = datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc)
    assert apply_retention(two_cameras, plan, audit, now=now) == 3  # gate ended 08:00:04, kept until 09:00:04
    assert apply_retention(two_cameras, plan, audit, now=now) == 0  # nothing more: and no audit line
    assert {e["camera"] for e in GalleryIndex.load(two_cameras).entries} == {"yard"}
    lines = [json.loads(x) for x in (two_cameras / "audit.jsonl").read_text().splitlines()]
    assert [(line["command"], line["items"]) for line in lines] == [("retention (gate: 1:00:00)", 3)]
    assert apply_retention(two_cameras, retention_of([], parse_duration("20m")), audit, now=now) == 3  # --retain
    assert GalleryIndex.load(two_cameras).entries == []


def test_retention_runs_on_a_schedule(two_cameras):
    forgotten = []
    schedule = RetentionSchedule(two_cameras, {"yard": timedelta(seconds=1)}, 0.05, after=forgotten.append).start()
    deadline = time.monotonic() + 20
    while not forgotten and time.monotonic() < deadline:
        time.sleep(0.05)
    schedule.stop()
    assert forgotten == [3]


@pytest.mark.parametrize(
    "text, message",
    [
        ("cameras: []\n", "expected `cameras:`"),
        ("cameras:\n  - {name: a}\n", "camera 1: a camera is"),
        ("cameras:\n  - {name: a, url: x, retain: soon}\n", "retain 'soon' is not a duration"),
        ("cameras:\n  - {name: a, url: x}\n  - {name: a, url: y}\n", "names must be unique"),
    ],
)
def test_a_bad_cameras_file_is_named(tmp_path, text, message):
    from ssan.errors import SsanError

    path = tmp_path / "cameras.yaml"
    path.write_text(text)
    with pytest.raises(SsanError, match=message) as caught:
        read_cameras(path)
    assert str(path) in str(caught.value)
