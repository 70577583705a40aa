"""Track results over HTTP (a real uvicorn on 127.0.0.1): the search answer, the clip and frame routes."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from datetime import timedelta

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("av")
import httpx  # noqa: E402

from footage import build_footage_index  # noqa: E402
from servers import fake_searcher, running  # noqa: E402
from ssan._time import parse_time  # noqa: E402
from ssan.search import GalleryIndex, Searcher  # noqa: E402
from ssan.search.app import create_app  # noqa: E402
from ssan.search.audit import AuditLog  # noqa: E402
from ssan.search.media import BOX_COLOUR, FrameCache  # noqa: E402
from ssan.search.security import Security  # noqa: E402
from ssan.search.tokens import TokenStore, generate_token  # noqa: E402

TOKEN = generate_token()
QUERY = {"query": "a man in a red jacket and blue jeans", "k": 10}
STREET_START = "2026-12-01T08:00:00.000000Z"  # the street video's creation_time; the folder of frames has none


@pytest.fixture(scope="module")
def footage(prepared_synth, tmp_path_factory):
    built = build_footage_index(tmp_path_factory.mktemp("served-footage"), prepared_synth, STREET_START)
    built["searcher"] = Searcher(built["index"])
    built["entries"] = GalleryIndex.load(built["index"]).entries
    return built


def serve(searcher, audit=None):
    security = Security(tokens=TokenStore([("alice", TOKEN)], "test"), audit=audit)
    return running(create_app(searcher, security))


def client(url: str, token: str = TOKEN) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=20)


def ids_of(footage, source_kind: str) -> list:
    return [i for i, e in enumerate(footage["entries"]) if e["source_kind"] == source_kind]


def test_track_search_answers_track_fields_and_no_server_paths(footage):
    with serve(footage["searcher"]) as url, client(url) as alice:
        assert alice.get("/healthz").json()["tracks"] is True
        response = alice.post("/api/search", json=QUERY)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == len(footage["entries"]) == 10  # 5 walkers, seen by two "cameras"
    assert {r["camera"] for r in results} == {"street", "lobby"}
    for r in results:
        entry = footage["entries"][r["image_id"]]
        for name in ("track", "camera", "frames", "times", "boxes"):
            assert r[name] == entry[name], name
        assert (r["offset_start"], r["offset_end"]) == (entry["start"], entry["end"])  # seconds in its file
        if r["camera"] == "street":  # wall-clock start known: ISO 8601 UTC times
            assert r["time_base"] == "utc" and r["start"].endswith("Z") and r["end"].endswith("Z")
            begin = parse_time(STREET_START)
            assert parse_time(r["start"]) == begin + timedelta(seconds=entry["start"])
            assert parse_time(r["end"]) == begin + timedelta(seconds=entry["end"])
        else:  # offsets only, and says so
            assert r["time_base"] == "offset" and (r["start"], r["end"]) == (entry["start"], entry["end"])
        assert "utc_start" not in r and "utc_end" not in r
        assert r["source"] == ("street.mp4" if r["camera"] == "street" else "lobby")
        assert r["url"] == f"/api/images/{r['image_id']}" and r["frame_url"] == f"/api/frames/{r['image_id']}"
        clip = f"/api/clips/{r['image_id']}" if r["camera"] == "street" else None
        assert r["clip_url"] == clip
        assert "video" not in r and "path" not in r and "source_kind" not in r
    text = response.text
    for folder in (footage["index"], footage["video"].parent, footage["frames"]):
        assert str(folder) not in text and str(folder.resolve()) not in text


def test_image_index_answers_keep_exactly_their_fields(tmp_path):
    with serve(fake_searcher(tmp_path, 3)) as url, client(url) as alice:
        answer = alice.post("/api/search", json={"query": "a man in black", "k": 2}).json()
        paths = alice.get("/openapi.json").json()["paths"]
        assert alice.get("/api/clips/0").status_code == 404 and alice.get("/api/frames/0").status_code == 404
    assert [set(r) for r in answer["results"]] == [{"rank", "image_id", "score", "id", "name", "url"}] * 2
    assert set(answer) == {"query", "k", "results", "tokens", "unknown_words", "truncated", "attention"}
    assert set(paths) == {"/api/search", "/api/images/{image_id}", "/healthz"}  # no media routes


def test_clip_route_serves_the_video_with_ranges(footage):
    data = footage["video"].read_bytes()
    size = len(data)
    street = ids_of(footage, "video")[0]
    with serve(footage["searcher"]) as url, client(url) as alice:
        whole = alice.get(f"/api/clips/{street}")
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
        assert int(whole.headers["content-length"]) == size
        part = alice.get(f"/api/clips/{street}", headers={"Range": "bytes=100-299"})
        assert part.status_code == 206 and part.content == data[100:300]
        assert part.headers["content-range"] == f"bytes 100-299/{size}"
        assert part.headers["content-length"] == "200" and part.headers["content-type"] == "video/mp4"
        tail = alice.get(f"/api/clips/{street}", headers={"Range": "bytes=-50"})
        assert tail.status_code == 206 and tail.content == data[-50:]
        assert tail.headers["content-range"] == f"bytes {size - 50}-{size - 1}/{size}"
        rest = alice.get(f"/api/clips/{street}", headers={"Range": f"bytes={size - 10}-{size + 1000}"})
        assert rest.status_code == 206 and rest.content == data[-10:]
        for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}", "bytes=-0"):
            refused = alice.get(f"/api/clips/{street}", headers={"Range": unsatisfiable})
            assert refused.status_code == 416, unsatisfiable
            assert refused.headers["content-range"] == f"bytes */{size}"
        etag = whole.headers["etag"]
        again = alice.get(f"/api/clips/{street}", headers={"Range": "bytes=0-9", "If-Range": etag})
        assert again.status_code == 206 and again.content == data[:10]
        stale = alice.get(f"/api/clips/{street}", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == data


def test_clip_route_answers_404_for_frames_images_unknown_ids_and_a_swapped_file(footage):
    video = footage["video"]
    street = ids_of(footage, "video")[0]
    with serve(footage["searcher"]) as url, client(url) as alice:
        for image_id in (ids_of(footage, "frames")[0], 10_000, "abc", "-1", "1" * 13):
            missing = alice.get(f"/api/clips/{image_id}")
            assert missing.status_code == 404 and missing.json() == {"detail": "no such clip"}, image_id
        kept = video.with_name("kept.mp4")
        other = video.with_name("other.mp4")
        other.write_bytes(b"not the indexed video")
        os.replace(video, kept)
        try:
            video.symlink_to(other)
            assert alice.get(f"/api/clips/{street}").status_code == 404  # a link swapped in
            video.unlink()
            assert alice.get(f"/api/clips/{street}").status_code == 404  # gone
        finally:
            if video.is_symlink():
                video.unlink()
            os.replace(kept, video)
        assert alice.get(f"/api/clips/{street}").status_code == 200


def _box_edge_colour(jpeg: bytes, box) -> np.ndarray:
    from PIL import Image

    picture = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(int)
    x, y, w, h = (int(v) for v in box)
    return picture[y + h // 2, x : x + 2].mean(axis=0)  # the left edge, half-way down


def test_frame_route_returns_the_frame_with_its_box_as_jpeg(footage):
    from PIL import Image

    from ssan.video import track_frame

    with serve(footage["searcher"]) as url, client(url) as alice:
        for image_id in (ids_of(footage, "video")[0], ids_of(footage, "frames")[0]):
            response = alice.get(f"/api/frames/{image_id}")
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            assert response.content[:3] == b"\xff\xd8\xff"
            entry = footage["entries"][image_id]
            assert Image.open(io.BytesIO(response.content)).size == (256, 144)
            assert np.abs(_box_edge_colour(response.content, entry["boxes"][0]) - BOX_COLOUR).max() < 60
            raw, _ = track_frame(entry)
            shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB")).astype(int)
            assert np.abs(shown[:20, :20] - raw[:20, :20].astype(int)).mean() < 8  # the frame, away from the box
        for image_id in (10_000, "x1"):
            assert alice.get(f"/api/frames/{image_id}").status_code == 404


def test_a_frame_whose_source_is_gone_is_404_without_its_path(footage):
    frames = footage["frames"]
    lobby = ids_of(footage, "frames")[0]
    moved = frames.with_name("lobby-away")
    os.replace(frames, moved)
    try:
        with serve(footage["searcher"]) as url, client(url) as alice:  # a new app: nothing cached
            response = alice.get(f"/api/frames/{lobby}")
    finally:
        os.replace(moved, frames)
    assert response.status_code == 404
    assert response.json() == {"detail": "the frame of this track cannot be read"}


def test_every_route_of_a_track_service_but_healthz_needs_a_token(footage):
    from starlette.routing import Mount

    security = Security(tokens=TokenStore([("alice", TOKEN)], "test"))
    app = create_app(footage["searcher"], security)
    paths = {route.path for route in app.routes if not isinstance(route, Mount)}
    assert {"/api/clips/{image_id}", "/api/frames/{image_id}"} <= paths
    with running(app) as url, client(url) as alice:
        assert alice.get("/openapi.json").json()["security"] == [{"token": []}]
        for path in sorted(paths - {"/healthz"}):
            path = path.replace("{image_id}", "0")
            method = "POST" if path == "/api/search" else "GET"
            assert httpx.request(method, url + path, timeout=20).status_code == 401, path


def test_the_new_routes_need_a_token_and_a_local_host(footage):
    street = ids_of(footage, "video")[0]
    with serve(footage["searcher"]) as url:
        for path in (f"/api/clips/{street}", f"/api/frames/{street}"):
            assert httpx.get(url + path, timeout=20).status_code == 401
            with client(url, token=generate_token()) as stranger:
                refused = stranger.get(path, headers={"Range": "bytes=0-9"})
                assert refused.status_code == 401 and refused.json() == {"detail": "the token was not accepted"}
            with client(url) as alice:
                assert alice.get(path, headers={"Host": "attacker.example"}).status_code == 400


def test_each_clip_and_frame_request_is_an_audit_line(footage, tmp_path):
    street, lobby = ids_of(footage, "video")[0], ids_of(footage, "frames")[0]
    log = tmp_path / "audit.jsonl"
    with serve(footage["searcher"], audit=AuditLog(log)) as url, client(url) as alice:
        assert alice.get(f"/api/clips/{street}").status_code == 200
        assert alice.get(f"/api/clips/{street}", headers={"Range": "bytes=0-99"}).status_code == 206
        assert alice.get(f"/api/clips/{lobby}").status_code == 404
        assert alice.get(f"/api/frames/{street}").status_code == 200
        assert alice.get(f"/api/frames/{lobby}").status_code == 200
        assert httpx.get(f"{url}/api/frames/{street}", timeout=20).status_code == 401  # not a line
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["user"], r["method"], r["path"], r["image_ids"], r["status"]) for r in records] == [
        ("alice", "GET", f"/api/clips/{street}", [street], 200),
        ("alice", "GET", f"/api/clips/{street}", [street], 206),
        ("alice", "GET", f"/api/clips/{lobby}", [], 404),
        ("alice", "GET", f"/api/frames/{street}", [street], 200),
        ("alice", "GET", f"/api/frames/{lobby}", [lobby], 200),
    ]


def test_frame_cache_is_a_bounded_lru_with_bounded_decoding():
    rendered, running_now, most = [], [0], [0]
    lock = threading.Lock()

    def render(track):
        with lock:
            running_now[0] += 1
            most[0] = max(most[0], running_now[0])
        time.sleep(0.02)
        with lock:
            running_now[0] -= 1
        rendered.append(track["track"])
        return f"jpeg {track['track']}".encode()

    cache = FrameCache(render, size=2, decoders=2)
    assert cache.get(1, {"track": 1}) == b"jpeg 1" and cache.get(1, {"track": 1}) == b"jpeg 1"
    cache.get(2, {"track": 2})
    cache.get(1, {"track": 1})  # 1 is now the most recent
    cache.get(3, {"track": 3})  # evicts 2
    cache.get(1, {"track": 1})
    cache.get(2, {"track": 2})
    assert rendered == [1, 2, 3, 2] and len(cache) == 2
    threads = [threading.Thread(target=cache.get, args=(10 + n, {"track": 10 + n})) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert most[0] == 2 and len(cache) == 2


def test_the_start_up_line_counts_tracks_for_footage_and_images_for_a_gallery(footage, tmp_path, monkeypatch):
    import uvicorn

    from helpers import run_cli
    from ssan.search import build_index

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)  # print the line, then stop
    args = ["--port", "0", "--no-auth", "--no-audit-log"]
    code, out, err = run_cli("serve", "--index", footage["index"], *args)
    assert code == 0 and f"serving {len(footage['entries'])} tracks on http://127.0.0.1:" in out, (out, err)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for i, entry in enumerate(footage["entries"][:3]):  # a track's best crops are images too
        (gallery / f"{i}.jpg").write_bytes(open(entry["path"], "rb").read())
    build_index(tmp_path / "idx", footage["checkpoint"], images=gallery, progress=False)
    code, out, err = run_cli("serve", "--index", tmp_path / "idx", *args)
    assert code == 0 and "serving 3 images on http://127.0.0.1:" in out, (out, err)
