"""The service's security pieces on their own: token files, Host/Origin parsing, the throttle, the audit log."""

from __future__ import annotations

import hashlib
import json
import stat
import threading

import pytest

from ssan.errors import SsanError
from ssan.search.audit import AuditLog
from ssan.search.audit_chain import verify
from ssan.search.security import _same_origin, split_host
from ssan.search.throttle import FailureThrottle
from ssan.search.tokens import TokenError, TokenStore, append_new_token, fingerprint, generate_token, parse_token_file

A, B = "a" * 16 + "-1", "B" * 20


# ----------------------------------------------------------------------------- tokens
def test_token_file_lines_named_bare_comments_and_blank():
    text = f"# operators\n\nalice:{A}\n  bob@unit.example:{B}  \n{'c' * 32}\n"
    assert parse_token_file(text, "t") == [("alice", A), ("bob@unit.example", B), (None, "c" * 32)]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "holds no tokens"),
        ("# only a comment\n", "holds no tokens"),
        ("alice:short\n", "line 1: a token must be 16 to 256"),
        (f"alice:{A}\nalice:{B}\n", "line 2: the name 'alice' appears twice"),
        (f"al ice:{A}\n", "line 1: a name must be"),
        (f":{A}\n", "line 1: a name must be"),
        (f"alice:{A}?\n", "a token must be"),
        (f"alice:{'x' * 257}\n", "got 257 characters"),
    ],
)
def test_bad_token_files_are_one_line_errors_naming_the_line(text, message):
    with pytest.raises(TokenError) as caught:
        parse_token_file(text, "tokens.txt")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_store_matches_exact_tokens_and_cookies_only():
    store = TokenStore([("alice", A), ("bob", B)], "test")
    assert store.names == ["alice", "bob"]
    alice = store.match_token(A.encode())
    assert alice.name == "alice" and alice.fingerprint == hashlib.sha256(A.encode()).hexdigest()[:12]
    assert store.match_token(B.encode()).name == "bob"
    for wrong in (A[:-1], A + "1", A[:-1] + "2", "", A.upper(), A + B, B.lower()):
        assert store.match_token(wrong.encode()) is None, wrong
    cookie = store.cookie_for(alice)
    assert A not in cookie and store.match_cookie(cookie.encode()) == alice
    assert store.match_token(cookie.encode()) is None and store.match_cookie(A.encode()) is None
    restarted = TokenStore([("alice", A)], "test")  # a new service: the old session cookie no longer works
    assert restarted.match_cookie(cookie.encode()) is None and restarted.match_token(A.encode()) == alice


def test_store_refuses_duplicates_and_nothing():
    with pytest.raises(TokenError, match="twice"):
        TokenStore([("a", A), ("b", A)], "test")
    with pytest.raises(TokenError, match="no tokens"):
        TokenStore([], "test")


def test_generated_tokens_are_long_random_and_valid():
    tokens = {generate_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) == 32 for t in tokens)
    TokenStore([(None, t) for t in tokens], "generated")
    assert len(fingerprint(A)) == 12 and fingerprint(A) != fingerprint(B)


def test_new_tokens_are_appended_to_a_private_file(tmp_path):
    path = tmp_path / "tokens"
    first = append_new_token(path, "alice")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text(path.read_text().rstrip("\n"))  # a file edited by hand, without the final newline
    second = append_new_token(path, "bob")
    store = TokenStore.from_file(path)
    assert store.names == ["alice", "bob"] and first != second
    assert store.match_token(second.encode()).name == "bob"
    with pytest.raises(TokenError, match="already has a token named 'alice'"):
        append_new_token(path, "alice")
    with pytest.raises(TokenError, match="a name must be"):
        append_new_token(path, "no spaces")
    assert path.read_text().count("\n") == 2


def test_a_token_file_others_can_read_is_warned_about(tmp_path, caplog):
    path = tmp_path / "tokens"
    path.write_text(f"alice:{A}\n")
    path.chmod(0o644)
    with caplog.at_level("WARNING", logger="ssan.search.tokens"):
        TokenStore.from_file(path)
    assert "chmod 600" in caplog.text
    with pytest.raises(TokenError, match="cannot read the token file"):
        TokenStore.from_file(tmp_path / "missing")


# ------------------------------------------------------------------------ Host, Origin
@pytest.mark.parametrize(
    "value, parsed",
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8000", ("localhost", 8000)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:65535", ("[::1]", 65535)),
        ("search.example.org:443", ("search.example.org", 443)),
    ],
)
def test_split_host(value, parsed):
    assert split_host(value) == parsed


@pytest.mark.parametrize(
    "value", ["", ":80", "a:0", "a:65536", "a:-1", "a:x", "a:", "[::1", "[::1]x", "[::1]:", "a@b", "a/b", "a b"]
)
def test_split_host_refuses_malformed_values(value):
    with pytest.raises(ValueError):
        split_host(value)


@pytest.mark.parametrize(
    "origin, host, scheme, same",
    [
        ("http://127.0.0.1:8000", ("127.0.0.1", 8000), "http", True),
        ("http://LOCALHOST:8000", ("localhost", 8000), "http", True),
        ("https://search.example", ("search.example", None), "https", True),
        ("https://search.example:443", ("search.example", None), "https", True),
        ("https://search.example", ("search.example", 443), "https", True),
        ("http://search.example", ("search.example", 80), "http", True),
        ("http://[::1]:8000", ("[::1]", 8000), "http", True),
        ("http://127.0.0.1:8001", ("127.0.0.1", 8000), "http", False),
        ("http://localhost:8000", ("127.0.0.1", 8000), "http", False),
        ("https://search.example", ("search.example", 80), "http", False),
        ("http://search.example", ("search.example", None), "https", False),  # another scheme, another origin
        ("https://127.0.0.1:8000", ("127.0.0.1", 8000), "http", False),
        ("null", ("127.0.0.1", 8000), "http", False),
        ("http://127.0.0.1:8000/", ("127.0.0.1", 8000), "http", False),
        ("http://u@127.0.0.1:8000", ("127.0.0.1", 8000), "http", False),
        ("file://127.0.0.1:8000", ("127.0.0.1", 8000), "file", False),
    ],
)
def test_same_origin(origin, host, scheme, same):
    assert _same_origin(origin, host, scheme) is same


# ---------------------------------------------------------------------------- throttle
def test_throttle_slows_then_refuses_then_forgives(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("ssan.search.throttle.time.monotonic", lambda: now[0])
    throttle = FailureThrottle(limit=3, window_s=60, delay_step_s=0.4, max_delay_s=0.5)
    assert [throttle.failed("1.2.3.4") for _ in range(2)] == [0.0, 0.4]
    assert throttle.retry_after("1.2.3.4") == 0
    now[0] += 10
    assert throttle.failed("1.2.3.4") == 0.5 and throttle.retry_after("1.2.3.4") == pytest.approx(50)
    assert throttle.retry_after("5.6.7.8") == 0  # other clients are not affected
    now[0] += 50.5  # the first two failures left the window
    assert throttle.retry_after("1.2.3.4") == 0
    now[0] += 60
    assert throttle.failed("1.2.3.4") == 0.0  # all forgotten


def test_throttle_remembers_a_bounded_number_of_clients():
    throttle = FailureThrottle(limit=1, max_clients=100)
    for number in range(1000):
        throttle.failed(f"10.0.{number // 256}.{number % 256}")
    assert len(throttle._failures) == 100 and throttle.retry_after("10.0.3.231") > 0


# --------------------------------------------------------------------------- audit log
def test_audit_lines_are_appended_to_a_private_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    log.write({"query": "a woman in a red coat 🙂", "k": 3})
    log.close()
    again = AuditLog(path)  # a restarted service appends
    again.write({"query": '\n"quoted"', "k": 1})
    again.close()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[1]["prev"] == records[0]["hash"] and verify(path).ok  # the restart continues the chain
    assert [{k: v for k, v in r.items() if k not in ("prev", "hash")} for r in records] == [
        {"query": "a woman in a red coat 🙂", "k": 3},
        {"query": '\n"quoted"', "k": 1},
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_rotation_keeps_the_bound_and_loses_no_line_it_keeps(tmp_path):
    """4 threads x 1,000 lines into a 16 KiB log with 3 old files: each file within the bound, whole
    lines only, and what is kept is, for every thread, its latest lines without a gap."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, max_bytes=16 * 1024, backups=3)

    def write(thread: int) -> None:
        for number in range(1000):
            log.write({"thread": thread, "number": number, "query": "x" * (number % 97)})

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    assert all(f.stat().st_size <= 16 * 1024 for f in files)
    kept = [json.loads(line) for name in (".3", ".2", ".1", "") for line in (tmp_path / f"audit.jsonl{name}").open()]
    assert len(kept) > 200  # 4 files of about 16 KiB, lines of 180 to 280 bytes (prev and hash included)
    for thread in range(4):  # a thread that finished early may have been rotated out entirely
        numbers = [r["number"] for r in kept if r["thread"] == thread]
        assert numbers == list(range(1000 - len(numbers), 1000))
    assert verify(path).ok


def test_audit_log_options_are_checked(tmp_path):
    with pytest.raises(SsanError, match="at least 16384"):
        AuditLog(tmp_path / "a", max_bytes=100)
    with pytest.raises(SsanError, match="cannot open the audit log"):
        AuditLog(tmp_path / "missing" / "audit.jsonl")
    AuditLog(tmp_path / "unbounded", max_bytes=0).close()
