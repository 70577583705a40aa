"""``ssan serve``: the search web page and HTTP API (FastAPI under uvicorn), behind a token.

The token comes from ``--token-file``, else from the ``SSAN_TOKEN`` environment variable, else
it is generated; the start-up line prints the address to open (with the token when generated).
Every option is checked, and the port bound, before anything is served: a bad one is a
one-line error.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import ssl
from pathlib import Path

from ssan.commands._retention_options import add_retention_arguments, retention_plan, start_retention
from ssan.commands._searcher_options import add_searcher_arguments
from ssan.errors import SsanError

HELP = "serve the search page and HTTP API for an index (FastAPI + uvicorn), behind a token"
TOKEN_VARIABLE = "SSAN_TOKEN"
AUDIT_FILE = "audit.jsonl"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", "--store", help="index folder written by `ssan index`, or a postgresql:// store URL")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add_searcher_arguments(parser)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024, help="larger request bodies get 413")
    access = parser.add_argument_group("access")
    access.add_argument(
        "--token-file",
        help=f"accepted tokens, `NAME:TOKEN` or `TOKEN` per line (default: ${TOKEN_VARIABLE}, else a generated token)",
    )
    access.add_argument("--new-token", metavar="NAME", help="add a new token for NAME to --token-file and exit")
    access.add_argument("--no-auth", action="store_true", help="serve without a token (loopback addresses only)")
    access.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME[:PORT]",
        help="also accept this Host name (repeatable; localhost, 127.0.0.1, [::1] and --host are)",
    )
    access.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="reverse proxies whose X-Forwarded-For/-Proto are trusted (comma-separated; default none)",
    )
    access.add_argument(
        "--audit-log", help=f"audit log, one JSON line per search and image (default: INDEX/{AUDIT_FILE})"
    )
    access.add_argument("--no-audit-log", action="store_true", help="keep no audit log")
    access.add_argument(
        "--audit-max-bytes",
        type=int,
        default=10_000_000,
        help="rotate the audit log at this size, keeping 3 old files (0: never; default 10 MB)",
    )
    access.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM); the cookie is then Secure")
    access.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    add_retention_arguments(parser.add_argument_group("retention (an index of footage)"))


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tokens(args: argparse.Namespace):
    """(TokenStore or None, the generated token or None) from --no-auth, --token-file, $SSAN_TOKEN."""
    from ssan.search.tokens import TokenStore, check_token, generate_token

    if args.no_auth:
        if args.token_file:
            raise SsanError("--no-auth and --token-file contradict each other: choose one")
        if not _is_loopback(args.host):
            raise SsanError(
                f"--no-auth is only allowed on a loopback address (127.0.0.1, ::1, localhost), "
                f"not --host {args.host}: anyone who can reach it could search the gallery"
            )
        log.warning(
            "authentication is off (--no-auth): every program and user on this machine can search "
            "the gallery and download its images"
        )
        return None, None
    if args.token_file:
        return TokenStore.from_file(args.token_file), None
    value = os.environ.get(TOKEN_VARIABLE, "").strip()
    if value:
        return TokenStore([(None, check_token(value, TOKEN_VARIABLE))], f"${TOKEN_VARIABLE}"), None
    token = generate_token()
    return TokenStore([(None, token)], "generated token"), token


def _allowed_hosts(args: argparse.Namespace) -> tuple:
    """--allow-host names (checked) and the listening address as a Host header spells it."""
    from ssan.search.security import split_host

    for name in args.allow_host:
        try:
            split_host(name)
        except ValueError:
            raise SsanError(f"--allow-host {name!r} is not a host name, NAME or NAME:PORT") from None
    if args.host in ("0.0.0.0", "::", ""):
        listening = [socket.gethostname(), socket.getfqdn()]
        log.warning(
            "listening on every address of this machine: clients must use one of %s or a name given with --allow-host",
            ", ".join(sorted({"localhost", *listening})),
        )
    else:
        listening = [f"[{args.host}]" if ":" in args.host else args.host]
    return tuple(args.allow_host) + tuple(listening)


def _audit(args: argparse.Namespace):
    from ssan.search.audit import AuditLog

    if args.no_audit_log:
        if args.audit_log:
            raise SsanError("--audit-log and --no-audit-log contradict each other: choose one")
        return None
    from ssan.search.store import is_url

    if not args.audit_log and is_url(args.index):
        raise SsanError("a postgresql:// store has no folder for an audit log: give --audit-log FILE or --no-audit-log")
    path = Path(args.audit_log) if args.audit_log else Path(args.index) / AUDIT_FILE
    return AuditLog(path, max_bytes=args.audit_max_bytes)


def _check_tls(args: argparse.Namespace) -> bool:
    """Whether HTTPS is on; a one-line error for a missing half or an unusable certificate or key."""
    if not args.ssl_certfile and not args.ssl_keyfile:
        return False
    if not (args.ssl_certfile and args.ssl_keyfile):
        raise SsanError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise SsanError(f"cannot use --ssl-certfile/--ssl-keyfile: {exc}") from None
    return True


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (connections wait in its backlog until uvicorn runs)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise SsanError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _address(host: str, port: int, tls: bool, token) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/" + (f"?token={token}" if token else "")


def _add_token(args: argparse.Namespace) -> int:
    from ssan.search.tokens import append_new_token, fingerprint

    if not args.token_file:
        raise SsanError("--new-token needs --token-file: the file the token is added to")
    token = append_new_token(args.token_file, args.new_token)
    log.info(
        "added a token for %s to %s (fingerprint %s); restart ssan serve to accept it",
        args.new_token,
        args.token_file,
        fingerprint(token),
    )
    print(token)
    return 0


def _warn_if_readable(index: str) -> None:
    """Index folders hold features and (footage) crops of people: say so when other users can read them."""
    import stat

    from ssan._files import open_to_others

    for folder in open_to_others(index, Path(index) / "crops"):  # the features and the people's pictures
        log.warning(
            "index folder %s is readable by other users (mode %o): it holds people's pictures and features; "
            "run `chmod -R go-rwx %s`",
            folder,
            stat.S_IMODE(folder.stat().st_mode),
            index,
        )


def run(args: argparse.Namespace) -> int:
    if args.new_token:
        return _add_token(args)
    if not args.index:
        raise SsanError("--index is required: the folder written by `ssan index`")
    try:
        import uvicorn

        from ssan.search.app import create_app
        from ssan.search.security import Security
    except ImportError:
        raise SsanError("serving needs FastAPI and uvicorn: pip install 'ssan[serve]'") from None
    from ssan.search import Searcher
    from ssan.search.store_index import read_index_meta

    meta = read_index_meta(args.index)  # before anything is written: the audit log goes into the index folder
    tokens, generated = _tokens(args)
    plan = retention_plan(args)
    tls, allowed, audit = _check_tls(args), _allowed_hosts(args), _audit(args)
    if not tls and not _is_loopback(args.host):
        log.warning(
            "plain HTTP on %s: tokens, queries and images cross the network unencrypted; use "
            "--ssl-certfile/--ssl-keyfile or a reverse proxy with TLS",
            args.host,
        )
    sock = _bind(args.host, args.port)  # before the model loads: a port in use fails at once
    port = sock.getsockname()[1]
    searcher = Searcher(
        args.index,
        backend=args.backend,
        device=args.device,
        checkpoint=args.checkpoint,
        onnx_dir=args.onnx,
        threads=args.threads,
    )
    if "://" not in args.index:  # a folder (a server store's access is the database's)
        _warn_if_readable(args.index)
    start_retention(plan, args, args.index, audit, after=lambda _: searcher.refresh())
    security = Security(tokens=tokens, allowed_hosts=allowed, audit=audit, cookie_name=f"ssan_session_{port}")
    app = create_app(searcher, security, max_body_bytes=args.max_body_bytes)
    config = uvicorn.Config(
        app,
        log_level="warning",
        server_header=False,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        proxy_headers=bool(args.forwarded_allow_ips),
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    content = "tracks" if meta.get("content") == "tracks" else "images"
    source = "" if generated or tokens is None else f" (tokens from {tokens.source})"
    audited = f"; audit log {audit.path}" if audit is not None else "; no audit log"
    print(
        f"serving {len(searcher.index)} {content} on {_address(args.host, port, tls, generated)}{source}{audited}",
        flush=True,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0
