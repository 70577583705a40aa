"""``ssan serve`` from the command line: its access options, their one-line errors, and the real thing."""

from __future__ import annotations

import json
import re
import shutil
import socket
import stat
import subprocess

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
import httpx  # noqa: E402

from helpers import run_cli, save_random_checkpoint  # noqa: E402
from servers import cli_server  # noqa: E402
from ssan.search.tokens import TokenStore, fingerprint, generate_token  # noqa: E402


@pytest.fixture(scope="module")
def index(synth_root, prepared_synth, tmp_path_factory):
    """An index over 4 synthetic images."""
    from ssan.search import build_index

    base = tmp_path_factory.mktemp("serve-cli")
    gallery = base / "gallery"
    gallery.mkdir()
    for image in sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:4]:
        shutil.copy(image, gallery / image.name)
    build_index(base / "idx", save_random_checkpoint(base / "m.pt", prepared_synth), images=gallery, progress=False)
    return base / "idx"


def one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssan serve: error:"), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.mark.parametrize(
    "args, fragments",
    [
        ([], ["--index is required"]),
        (["--no-auth", "--host", "0.0.0.0"], ["--no-auth is only allowed on a loopback address"]),
        (["--no-auth", "--host", "192.168.1.5"], ["not --host 192.168.1.5"]),
        (["--no-auth", "--token-file", "t"], ["choose one"]),
        (["--token-file", "/nonexistent/tokens"], ["cannot read the token file"]),
        (["--ssl-certfile", "cert.pem"], ["needs both --ssl-certfile and --ssl-keyfile"]),
        (["--ssl-certfile", "/nonexistent", "--ssl-keyfile", "/nonexistent"], ["cannot use --ssl-certfile"]),
        (["--allow-host", "evil.example/x"], ["--allow-host 'evil.example/x' is not a host name"]),
        (["--allow-host", "a:99999"], ["is not a host name"]),
        (["--audit-log", "/nonexistent/audit.jsonl"], ["cannot open the audit log /nonexistent/audit.jsonl"]),
        (["--audit-max-bytes", "100"], ["at least 16384 bytes"]),
        (["--audit-log", "a", "--no-audit-log"], ["choose one"]),
        (["--new-token", "alice"], ["--new-token needs --token-file"]),
    ],
)
def test_bad_access_options_are_one_line_errors(args, fragments, index, monkeypatch):
    monkeypatch.delenv("SSAN_TOKEN", raising=False)
    index_args = [] if fragments == ["--index is required"] else ["--index", index]
    one_line_error(*run_cli("serve", *index_args, *args)[::2], *fragments)


def test_bad_token_sources_are_one_line_errors(index, tmp_path, monkeypatch):
    monkeypatch.setenv("SSAN_TOKEN", "secret")
    one_line_error(*run_cli("serve", "--index", index)[::2], "SSAN_TOKEN: a token must be 16 to 256")
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{generate_token()}\nbob:short\n")
    one_line_error(*run_cli("serve", "--index", index, "--token-file", tokens)[::2], f"{tokens}, line 2")


def test_the_index_is_checked_before_anything_is_written(tmp_path, monkeypatch):
    """A missing index is named as such; a folder that is no index gets no audit.jsonl."""
    monkeypatch.delenv("SSAN_TOKEN", raising=False)
    one_line_error(*run_cli("serve", "--index", tmp_path / "nope")[::2], f"index {tmp_path / 'nope'} does not exist")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "photos").mkdir()
    one_line_error(*run_cli("serve", "--index", tmp_path / "photos")[::2], "is not a gallery index")
    assert list((tmp_path / "photos").iterdir()) == []


def test_new_token_appends_named_tokens_to_a_private_file(tmp_path):
    tokens = tmp_path / "tokens"
    code, out, err = run_cli("serve", "--token-file", tokens, "--new-token", "alice")
    assert code == 0 and re.fullmatch(r"[A-Za-z0-9_-]{32}\n", out), (out, err)
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600
    assert fingerprint(out.strip()) in err and "alice" in err  # the fingerprint is told, on stderr
    code, second, _ = run_cli("serve", "--token-file", tokens, "--new-token", "bob")
    assert code == 0
    store = TokenStore.from_file(tokens)
    assert store.names == ["alice", "bob"] and store.match_token(second.strip().encode()).name == "bob"
    one_line_error(*run_cli("serve", "--token-file", tokens, "--new-token", "alice")[::2], "already has")
    one_line_error(*run_cli("serve", "--token-file", tokens, "--new-token", "a b")[::2], "a name must be")


def test_a_port_in_use_is_a_one_line_error(index, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, _, err = run_cli("serve", "--index", index, "--port", port, "--no-audit-log")
    one_line_error(code, err, f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.slow
def test_serve_prints_a_tokenised_address_and_refuses_requests_without_it(index, monkeypatch):
    """The default: a generated token in the start-up line, the audit log inside the index folder."""
    monkeypatch.delenv("SSAN_TOKEN", raising=False)
    audit = index / "audit.jsonl"
    audit.unlink(missing_ok=True)
    with cli_server("--index", index) as (_, line):
        found = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=([A-Za-z0-9_-]{32})", line)
        assert found and f"audit log {audit}" in line, line
        url, token = found.groups()
        assert httpx.get(f"{url}/", timeout=10).status_code == 401
        assert httpx.post(f"{url}/api/search", json={"query": "a man", "k": 2}, timeout=10).status_code == 401
        assert httpx.get(f"{url}/healthz", timeout=10).json()["images"] == 4
        answer = httpx.post(
            f"{url}/api/search",
            json={"query": "a man", "k": 2},
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 200 and len(answer.json()["results"]) == 2
        assert httpx.get(f"{url}/healthz", headers={"Host": "attacker.example"}, timeout=10).status_code == 400
    records = [json.loads(r) for r in audit.read_text().splitlines()]
    assert [(r["query"], r["status"], r["token"]) for r in records] == [("a man", 200, fingerprint(token))]
    audit.unlink()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_serve_over_https_with_named_tokens(index, tmp_path):
    """--ssl-certfile/--ssl-keyfile reach uvicorn; the cookie is Secure; the audit log names the user."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    tokens, audit = tmp_path / "tokens", tmp_path / "audit.jsonl"
    alice, bob = generate_token(), generate_token()
    tokens.write_text(f"alice:{alice}\nbob:{bob}\n")
    tokens.chmod(0o600)
    args = [
        "--index",
        index,
        "--token-file",
        tokens,
        "--audit-log",
        audit,
        "--ssl-certfile",
        cert,
        "--ssl-keyfile",
        key,
        "--allow-host",
        "search.example",
    ]
    with cli_server(*args, env={"SSAN_TOKEN": generate_token()}) as (_, line):  # the file wins
        found = re.search(r"https://127\.0\.0\.1:(\d+)/ \(tokens from token file", line)
        assert found and alice not in line, line
        url = f"https://127.0.0.1:{found.group(1)}"
        with httpx.Client(base_url=url, verify=False, timeout=30) as client:
            opened = client.get("/", params={"token": bob})
            assert opened.status_code == 200 and "; Secure" in opened.headers["set-cookie"]
            assert client.get("/api/images/0", headers={"Host": "search.example"}).status_code == 200
            searched = client.post(
                "/api/search", json={"query": "a woman", "k": 1}, headers={"Authorization": f"Bearer {alice}"}
            )
            assert searched.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{found.group(1)}/healthz", timeout=5)  # no plain HTTP on that port
    records = [json.loads(r) for r in audit.read_text().splitlines()]
    assert [(r["user"], r["path"]) for r in records] == [("bob", "/api/images/0"), ("alice", "/api/search")]
