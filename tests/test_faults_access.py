"""Faults catalogue, who may use the service (a real uvicorn on 127.0.0.1): tokens, Host, Origin, brute force.

Every route is found in the app itself, so a route added later is covered too. Without a
token every one but ``/healthz`` is 401; with the bearer token or the session cookie each
works; wrong tokens in every spelling never do; a foreign ``Host`` is refused on every route
(DNS rebinding), a foreign ``Origin`` on every POST; 30 wrong tokens from one client get 429
while another client is still served. Refused requests never reach the searcher.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402
from starlette.routing import Mount  # noqa: E402

from servers import fake_searcher, raw_request, running  # noqa: E402
from ssan.search.app import create_app  # noqa: E402
from ssan.search.security import Security  # noqa: E402
from ssan.search.throttle import FailureThrottle  # noqa: E402
from ssan.search.tokens import TokenStore, generate_token  # noqa: E402

ALICE, BOB = generate_token(), generate_token()
OPEN = {("GET", "/healthz"), ("HEAD", "/healthz")}


def route_requests(app) -> list:
    """``(method, path)`` for every route of the app (a file under each mount), and two unknown ones."""
    requests = [("GET", "/nope"), ("POST", "/nope")]
    for route in app.routes:
        if isinstance(route, Mount):
            requests += [("GET", f"{route.path}/app.js"), ("GET", f"{route.path}/style.css")]
        else:
            requests += [(method, route.path.replace("{image_id}", "0")) for method in sorted(route.methods)]
    return requests


def send(client: httpx.Client, method: str, path: str, **options) -> httpx.Response:
    body = {"json": {"query": "a man in black", "k": 2}} if method == "POST" else {}
    return client.request(method, path, **body, **options)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """Two named tokens, a throttle that never locks out (the wrong-token cases are many), one extra Host."""
    searcher = fake_searcher(tmp_path_factory.mktemp("access"))
    security = Security(
        tokens=TokenStore([("alice", ALICE), ("bob", BOB)], "test"),
        allowed_hosts=("search.example", "other.example:8443"),
        throttle=FailureThrottle(limit=100_000, delay_step_s=0),
    )
    app = create_app(searcher, security)
    with running(app) as url:
        yield {"url": url, "port": int(url.rsplit(":", 1)[1]), "app": app, "searcher": searcher}


def test_every_route_needs_a_token_but_healthz(service, record_property):
    requests = route_requests(service["app"])
    assert {
        ("POST", "/api/search"),
        ("GET", "/api/images/0"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/"),
    } <= set(requests)
    calls = service["searcher"].calls
    with httpx.Client(base_url=service["url"], timeout=10) as client:
        for method, path in requests:
            response = send(client, method, path)
            if (method, path) in OPEN:
                assert response.status_code == 200, path
                continue
            assert response.status_code == 401, (method, path, response.status_code)
            assert response.headers["www-authenticate"].startswith("Bearer")
            if method != "HEAD":
                assert "token" in response.json()["detail"]
    assert service["searcher"].calls == calls
    record_property("cases", len(requests))


def test_the_bearer_token_or_the_cookie_opens_every_route(service, record_property):
    requests = route_requests(service["app"])
    expected = {"/nope": 404, "/docs/oauth2-redirect": 200}
    with httpx.Client(base_url=service["url"], timeout=10) as client:
        for token in (ALICE, BOB):
            for method, path in requests:
                response = send(client, method, path, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code == expected.get(path, 200), (method, path, response.status_code)
        opened = client.get(f"/?token={BOB}")
        assert opened.status_code == 200 and 'id="query"' in opened.text
        cookie = opened.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie and ALICE not in cookie and BOB not in cookie  # the cookie is not the token
    with httpx.Client(base_url=service["url"], timeout=10, cookies=opened.cookies) as browser:
        for method, path in requests:
            assert send(browser, method, path).status_code == expected.get(path, 200), (method, path)
    with httpx.Client(base_url=service["url"], timeout=10) as client:  # lower-case scheme, RFC 7235
        assert client.get("/api/images/1", headers={"Authorization": f"bearer {ALICE}"}).status_code == 200
    record_property("cases", 3 * len(requests) + 2)


def wrong_tokens() -> list:
    last = "A" if ALICE[-1] != "A" else "B"
    first = "A" if ALICE[0] != "A" else "B"
    return [
        ALICE[:-1] + last,
        first + ALICE[1:],
        ALICE[:-1],
        ALICE + "x",
        ALICE + ALICE,
        ALICE[:16],
        "",
        " ",
        ALICE.swapcase(),
        ALICE[::-1],
        BOB[:-1] + ("A" if BOB[-1] != "A" else "B"),
        "x" * 5000,
        f"{ALICE} {BOB}",
        f"{ALICE},{BOB}",
        "%00" + ALICE,
        ALICE + "%20",
        "é" + ALICE[1:],
    ]


def raw(port: int, method: str, path: str, headers: dict) -> int:
    """Status of a request sent verbatim (header values h11 would refuse to send, non-ASCII ones...)."""
    body = b'{"query": "a man", "k": 2}' if method == "POST" else b""
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Connection: close",
        f"Content-Length: {len(body)}",
        "Content-Type: application/json",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return raw_request(port, "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + body)[0]


def test_wrong_tokens_never_work(service, record_property):
    """Differing in the last character, the first, in length, empty, in case, another user's near miss..."""
    port, calls, cases = service["port"], service["searcher"].calls, 0
    cookie = httpx.get(f"{service['url']}/?token={ALICE}", timeout=10).cookies
    ((name, session),) = cookie.items()
    targets = (("POST", "/api/search"), ("GET", "/api/images/0"), ("GET", "/"))
    with httpx.Client(base_url=service["url"], timeout=10) as client:  # keeps no cookie: none is ever set
        for wrong in [*wrong_tokens(), session]:
            for method, path in targets:
                assert raw(port, method, path, {"Authorization": f"Bearer {wrong}"}) == 401, (wrong[:40], path)
                assert send(client, method, path, params={"token": wrong}).status_code == 401, (wrong[:40], path)
                cases += 2
                if wrong != session:  # the session value is no token, but it is the cookie
                    assert raw(port, method, path, {"Cookie": f"{name}={wrong}"}) == 401, (wrong[:40], path)
                    cases += 1
        for value in (f"Basic {ALICE}", f"Token {ALICE}", ALICE, "Bearer", "Bearer ", f"Bearer  {ALICE}x"):
            assert raw(port, "GET", "/api/images/0", {"Authorization": value}) == 401, value
            cases += 1
        assert raw(port, "GET", "/api/images/0", {"Cookie": f"{name}={ALICE}"}) == 401  # the token is no cookie
        assert raw(port, "GET", "/api/images/0", {"Authorization": f"Bearer {ALICE}"}) == 200
        assert raw(port, "GET", "/api/images/0", {"Cookie": f"other=1; {name}={session}"}) == 200
    assert service["searcher"].calls == calls
    record_property("cases", cases + 1)


FOREIGN_HOSTS = [
    "attacker.example",
    "attacker.example:{port}",
    "127.0.0.1.attacker.example",
    "localhost.evil",
    "127.0.0.2:{port}",
    "[::2]:{port}",
    "0.0.0.0:{port}",
    "localhost@attacker.example",
    "attacker.example#127.0.0.1",
    "127.0.0.1:99999",
    "127.0.0.1:abc",
    "127.0.0.1:",
    "[::1",
    "other.example:9999",
    "other.example",
    "search.example.evil",
    "",
]


def test_a_foreign_host_is_refused_on_every_route(service, record_property):
    port, calls, cases = service["port"], service["searcher"].calls, 0
    hosts = [host.format(port=port) for host in FOREIGN_HOSTS]
    auth = {"Authorization": f"Bearer {ALICE}"}
    with httpx.Client(base_url=service["url"], timeout=10) as client:
        for method, path in route_requests(service["app"]):
            for host in hosts:
                response = send(client, method, path, headers={**auth, "Host": host})
                assert response.status_code == 400, (host, method, path, response.status_code)
                cases += 1
        for host in (
            "localhost",
            f"LOCALHOST:{port}",
            "127.0.0.1",
            f"[::1]:{port}",
            "search.example",
            "search.example:443",
            "other.example:8443",
        ):
            assert client.get("/api/images/0", headers={**auth, "Host": host}).status_code == 200, host
            cases += 1
    for request in (
        b"GET /healthz HTTP/1.0\r\n\r\n",  # no Host at all
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: attacker.example\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ):
        assert raw_request(port, request)[0] == 400, request
        cases += 1
    assert service["searcher"].calls == calls
    record_property("cases", cases)


def test_a_foreign_origin_is_refused_on_post(service, record_property):
    port, calls = service["port"], service["searcher"].calls
    auth = {"Authorization": f"Bearer {ALICE}"}
    foreign = [
        "http://attacker.example",
        f"http://attacker.example:{port}",
        "null",
        f"http://localhost:{port}",
        f"http://127.0.0.1:{port + 1}",
        "http://127.0.0.1",
        f"http://127.0.0.1:{port}.attacker.example",
        f"ftp://127.0.0.1:{port}",
        f"https://127.0.0.1:{port}",
        f"http://user@127.0.0.1:{port}",
        f"http://127.0.0.1:{port}/x",
        "",
        "*",
    ]
    with httpx.Client(base_url=service["url"], timeout=10) as client:
        for origin in foreign:
            for path in ("/api/search", "/nope", "/"):
                response = send(client, "POST", path, headers={**auth, "Origin": origin})
                assert response.status_code == 403, (origin, path, response.status_code)
        own = send(client, "POST", "/api/search", headers={**auth, "Origin": f"http://127.0.0.1:{port}"})
        assert own.status_code == 200
        assert send(client, "POST", "/api/search", headers=auth).status_code == 200  # no Origin: not a browser
        viewed = client.get("/api/images/0", headers={**auth, "Origin": "http://attacker.example"})
        assert viewed.status_code == 200  # GET changes nothing; SameSite=Strict keeps the cookie off it
    assert service["searcher"].calls == calls + 2
    record_property("cases", 3 * len(foreign) + 3)


def test_the_token_page_for_browsers(service, record_property):
    html = {"Accept": "text/html,application/xhtml+xml"}
    with httpx.Client(base_url=service["url"], timeout=10) as client:
        page = client.get("/", headers=html)
        assert page.status_code == 401 and 'id="token-form"' in page.text and "token-error" not in page.text
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "unsafe-inline" not in policy and "script-src" not in policy
        wrong = client.get("/", params={"token": "x" * 20}, headers=html)
        assert wrong.status_code == 401 and 'id="token-error"' in wrong.text
        stale = client.get("/", headers={**html, "Cookie": "ssan_session=0123456789abcdef"})
        assert stale.status_code == 401 and "Max-Age=0" in stale.headers["set-cookie"]  # forgotten
        assert 'id="token-form"' in stale.text and "token-error" not in stale.text  # nothing was typed
        api = client.get("/api/images/0", headers=html | {"Accept": "application/json"})
        assert api.status_code == 401 and api.headers["content-type"] == "application/json"
    record_property("cases", 4)


@pytest.mark.slow
def test_thirty_wrong_tokens_get_429_and_other_clients_are_still_served(tmp_path, record_property):
    """The default throttle: wrong tokens are answered slower, the 11th within a minute gets 429."""
    security = Security(tokens=TokenStore([(None, ALICE)], "test"))
    with running(create_app(fake_searcher(tmp_path), security)) as url:
        statuses, delays = [], []
        with httpx.Client(base_url=url, timeout=10) as client:
            for number in range(30):
                response = client.get("/api/images/0", headers={"Authorization": f"Bearer wrong-token-{number:08d}"})
                statuses.append(response.status_code)
                delays.append(response.elapsed.total_seconds())
            assert statuses[:10] == [401] * 10 and statuses[10:] == [429] * 20, statuses
            assert delays[9] > delays[0] + 0.5  # slowed down before being refused
            locked = client.get("/api/images/0", headers={"Authorization": f"Bearer {ALICE}"})
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0  # even the right token
            assert client.get("/healthz").status_code == 200
        other = httpx.HTTPTransport(local_address="127.0.0.2")  # another client address
        with httpx.Client(base_url=url, timeout=10, transport=other) as client:
            assert client.get("/api/images/0", headers={"Authorization": f"Bearer {ALICE}"}).status_code == 200
    record_property("cases", 33)
