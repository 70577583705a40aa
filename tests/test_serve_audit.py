"""The audit log of a running service (a real uvicorn on 127.0.0.1): one line per search and image."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from servers import fake_searcher, running  # noqa: E402
from ssan.search.app import create_app  # noqa: E402
from ssan.search.audit import AuditLog  # noqa: E402
from ssan.search.audit_chain import verify  # noqa: E402
from ssan.search.security import Security  # noqa: E402
from ssan.search.tokens import TokenStore, generate_token  # noqa: E402

ALICE, BOB = generate_token(), generate_token()
FIELDS = {"time", "client", "user", "token", "method", "path", "query", "k", "image_ids", "status", "prev", "hash"}


def lines(path: Path) -> list:
    """Every line of the log, parsed (a malformed line fails the test)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def serve(tmp_path, audit: AuditLog, count: int = 3):
    security = Security(tokens=TokenStore([("alice", ALICE), ("bob", BOB)], "test"), audit=audit)
    return running(create_app(fake_searcher(tmp_path, count), security))


def test_each_search_and_image_request_writes_one_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    with serve(tmp_path, AuditLog(path)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=10) as alice:
            assert alice.post("/api/search", json={"query": "a man in black", "k": 2}).status_code == 200
            assert alice.get("/api/images/1").status_code == 200
            assert alice.post("/api/search", json={"query": "zzqx", "k": 3}).status_code == 400
            assert alice.post("/api/search", json={"query": "a man", "k": 0}).status_code == 422
            assert alice.get("/api/images/7").status_code == 404
            for path_only in ("/", "/healthz", "/static/app.js", "/openapi.json"):  # not audited
                assert alice.get(path_only).status_code == 200
        assert httpx.post(f"{url}/api/search", json={"query": "a man", "k": 2}).status_code == 401  # not audited
        with httpx.Client(base_url=url, timeout=10) as browser:
            assert browser.get("/", params={"token": BOB}).status_code == 200
            assert browser.get("/api/images/0").status_code == 200  # the cookie: bob
    records = lines(path)
    assert all(set(r) == FIELDS for r in records)
    assert [(r["user"], r["method"], r["path"], r["query"], r["k"], r["image_ids"], r["status"]) for r in records] == [
        ("alice", "POST", "/api/search", "a man in black", 2, [0, 1], 200),
        ("alice", "GET", "/api/images/1", None, None, [1], 200),
        ("alice", "POST", "/api/search", "zzqx", 3, [], 400),
        ("alice", "POST", "/api/search", None, None, [], 422),
        ("alice", "GET", "/api/images/7", None, None, [], 404),
        ("bob", "GET", "/api/images/0", None, None, [0], 200),
    ]
    fingerprints = {
        "alice": hashlib.sha256(ALICE.encode()).hexdigest()[:12],
        "bob": hashlib.sha256(BOB.encode()).hexdigest()[:12],
    }
    assert all(r["token"] == fingerprints[r["user"]] and r["client"] == "127.0.0.1" for r in records)
    assert all(r["time"].endswith("Z") and r["time"][:2] == "20" for r in records)
    text = path.read_text()
    assert ALICE not in text and BOB not in text  # never the token


def test_eight_concurrent_clients_leave_exactly_as_many_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    failures = []

    def client(url: str, number: int) -> None:
        token, query = (ALICE, BOB)[number % 2], f"client {number} in a red coat"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as session:
            for request in range(50):
                if request % 2:
                    response = session.get(f"/api/images/{request % 3}")
                else:
                    response = session.post("/api/search", json={"query": query, "k": 1 + request % 3})
                if response.status_code != 200:
                    failures.append(response.status_code)

    with serve(tmp_path, AuditLog(path)) as url:
        threads = [threading.Thread(target=client, args=(url, number)) for number in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    records = lines(path)
    assert len(records) == 8 * 50 and all(set(r) == FIELDS and r["status"] == 200 for r in records)
    for number in range(8):
        mine = [r for r in records if r["query"] == f"client {number} in a red coat"]
        assert len(mine) == 25 and {r["user"] for r in mine} == {("alice", "bob")[number % 2]}
        assert sorted(len(r["image_ids"]) for r in mine) == sorted(1 + i % 3 for i in range(0, 50, 2))
    assert verify(path).ok  # eight threads, one chain
    assert sum(r["path"].startswith("/api/images/") for r in records) == 8 * 25


def test_rotation_keeps_the_bound_while_serving(tmp_path):
    path = tmp_path / "audit.jsonl"
    with serve(tmp_path, AuditLog(path, max_bytes=16 * 1024, backups=2)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=10) as alice:
            for number in range(300):
                assert (
                    alice.post("/api/search", json={"query": f"query {number} " + "x" * 60, "k": 3}).status_code == 200
                )
    files = sorted(p.name for p in tmp_path.glob("audit.jsonl*"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all((tmp_path / name).stat().st_size <= 16 * 1024 for name in files)
    kept = [r["query"].split()[1] for name in reversed(files) for r in lines(tmp_path / name)]
    assert kept == [str(n) for n in range(300 - len(kept), 300)]  # the newest, none missing
    assert verify(path).ok  # one chain across the rotated files


def test_a_request_that_cannot_be_recorded_is_refused(tmp_path):
    """The line is written before the answer leaves: with the log on a full disk, nothing is served."""
    with serve(tmp_path, AuditLog("/dev/full")) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ALICE}"}, timeout=10) as alice:
            image = alice.get("/api/images/0")
            assert image.status_code == 503 and image.json() == {"detail": "the audit log cannot be written"}
            assert alice.post("/api/search", json={"query": "a man", "k": 2}).status_code == 503
            assert alice.get("/healthz").status_code == 200 and alice.get("/").status_code == 200


def test_behind_a_trusted_reverse_proxy(tmp_path):
    """As the README's proxy setup runs it: the proxy's Host, https Origin and client address are used."""
    path = tmp_path / "audit.jsonl"
    security = Security(
        tokens=TokenStore([("alice", ALICE)], "test"), audit=AuditLog(path), allowed_hosts=("search.example.org",)
    )
    app = create_app(fake_searcher(tmp_path), security)
    forwarded = {"Host": "search.example.org", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    with running(app, proxy_headers=True, forwarded_allow_ips="127.0.0.1") as url:
        with httpx.Client(base_url=url, headers=forwarded, timeout=10) as browser:
            opened = browser.get("/", params={"token": ALICE})
            assert opened.status_code == 200 and "; Secure" in opened.headers["set-cookie"]
            cookie = opened.headers["set-cookie"].split(";")[0]
            search = browser.post(
                "/api/search",
                json={"query": "a man", "k": 1},
                headers={"Cookie": cookie, "Origin": "https://search.example.org"},
            )
            assert search.status_code == 200
            foreign = browser.post(
                "/api/search",
                json={"query": "a man", "k": 1},
                headers={"Cookie": cookie, "Origin": "http://search.example.org"},
            )
            assert foreign.status_code == 403  # http is not the https origin the proxy serves
    assert [(r["client"], r["user"]) for r in lines(path)] == [("203.0.113.7", "alice")]
