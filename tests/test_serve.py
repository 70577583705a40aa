"""The FastAPI service: search, images by id only, page, health, limits and JSON errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from helpers import save_random_checkpoint  # noqa: E402
from servers import fake_searcher  # noqa: E402
from ssan.search import Searcher, build_index  # noqa: E402
from ssan.search.app import create_app  # noqa: E402
from ssan.search.security import Security  # noqa: E402
from ssan.search.tokens import TokenStore, generate_token  # noqa: E402

TOKEN = generate_token()
BASE_URL = "http://127.0.0.1:8000"


def make_client(searcher, raise_server_exceptions: bool = True, **app_options) -> TestClient:
    """An in-process client that sends the service's token (the Host is one the service accepts)."""
    app = create_app(searcher, Security(tokens=TokenStore([(None, TOKEN)], "test")), **app_options)
    return TestClient(
        app,
        base_url=BASE_URL,
        headers={"Authorization": f"Bearer {TOKEN}"},
        raise_server_exceptions=raise_server_exceptions,
    )


@pytest.fixture()
def fake(tmp_path):
    return fake_searcher(tmp_path)


@pytest.fixture()
def client(fake):
    return make_client(fake, max_body_bytes=4096)


def test_search_returns_results_with_image_urls_and_attention(client):
    response = client.post("/api/search", json={"query": "a man in black", "k": 2})
    assert response.status_code == 200
    body = response.json()
    assert [r["url"] for r in body["results"]] == ["/api/images/0", "/api/images/1"]
    assert body["results"][0]["score"] == 2.0 and body["results"][0]["name"] == "person0.png"
    assert "path" not in body["results"][0]  # server paths are not disclosed
    assert body["attention"]["part_1"][1] == ["man", 0.5]
    assert client.get(body["results"][1]["url"]).headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "payload",
    [
        {"query": "", "k": 5},
        {"query": "x" * 1001, "k": 5},
        {"query": "a man", "k": 0},
        {"query": "a man", "k": 101},
        {"query": 5, "k": 5},
        {"query": "a man", "k": "5"},
        {"query": "a man", "k": 2.5},
        {"query": ["a"], "k": 1},
        {"k": 5},
        {"query": "a man", "k": 5, "extra": 1},
        {"query": None},
        {"query": "a man", "k": True},
    ],
)
def test_bad_input_gets_422_json_and_no_model_call(client, fake, payload):
    response = client.post("/api/search", json=payload)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)
    assert fake.calls == 0


def test_limits_are_inclusive(client):
    assert client.post("/api/search", json={"query": "x" * 1000, "k": 100}).status_code == 200
    assert client.post("/api/search", json={"query": "x", "k": 1}).status_code == 200


def test_malformed_json_and_unusable_query(client, fake):
    response = client.post("/api/search", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    response = client.post("/api/search", json={"query": "zzqx", "k": 3})
    assert response.status_code == 400 and "vocabulary" in response.json()["detail"]


def test_oversized_bodies_get_413_before_the_model_runs(client, fake):
    big = json.dumps({"query": "a " * 4000, "k": 5}).encode()
    response = client.post("/api/search", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "limit" in response.json()["detail"]

    def chunks():  # no Content-Length: chunked transfer, counted as it streams
        for _ in range(10):
            yield b"x" * 1000

    response = client.post("/api/search", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert fake.calls == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/images/..%2f..%2fetc%2fpasswd",
        "/api/images/../../etc/passwd",
        "/api/images/%2fetc%2fpasswd",
        "/api/images//etc/passwd",
        "/api/images/-1",
        "/api/images/2",
        "/api/images/99999999999999999999",
        "/api/images/1e3",
        "/api/images/0x1",
        "/api/images/%2e%2e",
        "/api/images/person0.png",
        "/api/images/ 1",
        "/static/../../etc/passwd",
        "/static/..%2f..%2fetc%2fpasswd",
    ],
)
def test_image_route_refuses_anything_but_indexed_ids(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text


def test_page_health_openapi_and_static_files(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="query"' in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN or external resource
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok", "images": 2, "kind": "flat", "backend": "fake"}
    schema = client.get("/openapi.json").json()
    assert "/api/search" in schema["paths"] and "/api/images/{image_id}" in schema["paths"]
    assert page.headers["x-content-type-options"] == "nosniff"


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get("/api/search").status_code == 405


def test_internal_errors_are_json_500(fake):
    def explode(query, k=10):
        raise RuntimeError("boom")

    fake.search = explode
    response = make_client(fake, raise_server_exceptions=False).post("/api/search", json={"query": "a"})
    assert response.status_code == 500 and response.json() == {"detail": "internal server error"}


# --- with a real index and model ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_index(synth_root, prepared_synth, tmp_path_factory):
    """An index over 6 synthetic images; a link in the gallery leading outside it is not indexed."""
    base = tmp_path_factory.mktemp("serve")
    checkpoint = save_random_checkpoint(base / "random.pt", prepared_synth, seed=0)
    gallery = base / "gallery"
    gallery.mkdir()
    for number, image in enumerate(sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:6]):
        shutil.copy(image, gallery / f"{number}{image.suffix}")
    outside = base / "outside.png"
    shutil.copy(next(gallery.iterdir()), outside)
    (gallery / "link_out.png").symlink_to(outside)
    build_index(base / "idx", checkpoint, images=gallery, progress=False)
    return base


def test_real_searcher_over_http_and_concurrent_requests(real_index):
    from concurrent.futures import ThreadPoolExecutor

    client = make_client(Searcher(real_index / "idx"))
    assert client.get("/healthz").json()["images"] == 6  # the link leading outside was not indexed
    queries = ["a man in black", "a woman in a red coat", "white shoes"] * 4
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda q: client.post("/api/search", json={"query": q, "k": 6}), queries))
    assert all(r.status_code == 200 for r in responses)
    by_query = {}
    for query, response in zip(queries, responses):
        by_query.setdefault(query, []).append(json.dumps(response.json()["results"]))
    assert all(len(set(answers)) == 1 for answers in by_query.values())
    for result in responses[0].json()["results"]:
        image = client.get(result["url"])
        assert image.status_code == 200 and len(image.content) > 100
    assert client.post("/api/search", json={"query": "🙂", "k": 3}).status_code == 400
    assert client.post("/api/search", json={"query": "zzqx", "k": 3}).status_code == 400


def test_indexed_file_swapped_for_a_link_is_refused(real_index, tmp_path):
    searcher = Searcher(real_index / "idx")
    client = make_client(searcher)
    victim = Path(searcher.index.entries[0]["path"])
    backup = tmp_path / "backup"
    shutil.move(victim, backup)
    try:
        victim.symlink_to("/etc/passwd")
        assert client.get("/api/images/0").status_code == 404
    finally:
        victim.unlink()
        shutil.move(backup, victim)
    assert client.get("/api/images/0").status_code == 200


def test_without_authentication_the_host_check_still_holds(fake):
    """``Security(tokens=None)`` (``ssan serve --no-auth``, loopback only): no token, but no foreign Host either."""
    client = TestClient(create_app(fake, Security(tokens=None)), base_url=BASE_URL)
    assert client.post("/api/search", json={"query": "a man", "k": 1}).status_code == 200
    assert client.get("/api/images/0").status_code == 200
    assert "security" not in client.get("/openapi.json").json()
    assert client.get("/api/images/0", headers={"Host": "attacker.example"}).status_code == 400
    foreign = client.post("/api/search", json={"query": "a man", "k": 1}, headers={"Origin": "http://attacker.example"})
    assert foreign.status_code == 403


def test_openapi_states_the_bearer_token(client):
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["token"] == {"type": "http", "scheme": "bearer"}
    assert schema["security"] == [{"token": []}] and schema["paths"]["/healthz"]["get"]["security"] == []
