"""Who may use the search service, and the Host and Origin checks that run before anything else.

:class:`Security` gathers the service's protections (tokens, accepted host names, throttle,
audit log) for :func:`ssan.search.app.create_app`. :class:`HostOriginMiddleware` refuses,
before any route runs, a request whose ``Host`` is not an accepted name (400: a web page
whose name was rebound to this machine's address, DNS rebinding) and a state-changing
request whose ``Origin`` is present and is not the service itself (403: another site's page
posting to it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Tuple
from urllib.parse import urlsplit

from ssan.search.audit import AuditLog
from ssan.search.limits import send_json
from ssan.search.throttle import FailureThrottle
from ssan.search.tokens import TokenStore

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass
class Security:
    """The protections of a service.

    Attributes:
        tokens: the accepted tokens; None turns authentication off (``ssan serve --no-auth``,
            which it allows on a loopback address only).
        allowed_hosts: ``Host`` names accepted besides ``localhost``, ``127.0.0.1`` and ``[::1]``
            (the listening address, ``--allow-host``); ``NAME`` accepts any port, ``NAME:PORT`` that one.
        throttle: counts wrong tokens per client (slows them down, then 429).
        audit: where each search and image request is recorded; None for no audit log.
        cookie_name: the browser session cookie (``ssan serve`` puts the port in it: cookies do not
            tell ports apart, and two services on one machine would otherwise log each other out).
    """

    tokens: Optional[TokenStore]
    allowed_hosts: Tuple[str, ...] = ()
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    audit: Optional[AuditLog] = None
    cookie_name: str = "ssan_session"


def split_host(value: str) -> Tuple[str, Optional[int]]:
    """``(name, port)`` of a ``Host`` value (``name``, ``name:port``, ``[v6]``, ``[v6]:port``); name
    lower-cased, port None when absent. ValueError for a malformed value."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError("unclosed [")
        name, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after ]")
        port_text = rest[1:] if rest else None
    else:
        name, colon, port_text = value.partition(":")
        port_text = port_text if colon else None
    if not name or any(c in name for c in "/\\@?# "):
        raise ValueError("not a host name")
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("bad port")
    return name, int(port_text)


def _allowed(host: Tuple[str, Optional[int]], allowed: frozenset) -> bool:
    return host[0] in allowed or f"{host[0]}:{host[1]}" in allowed


def _same_origin(origin: str, host: Tuple[str, Optional[int]], scheme: str) -> bool:
    """Whether ``Origin: origin`` names the service reached as ``Host: host`` over ``scheme``
    (``https`` under TLS, or behind a trusted proxy that says so in ``X-Forwarded-Proto``)."""
    try:
        parts = urlsplit(origin)
        name, port = split_host(parts.netloc)
    except ValueError:
        return False
    if parts.scheme != scheme or scheme not in _DEFAULT_PORTS or parts.path or parts.query or parts.username:
        return False
    default = _DEFAULT_PORTS[scheme]
    return name == host[0] and (port or default) == (host[1] or default)


class HostOriginMiddleware:
    """Refuse foreign ``Host`` headers (400) and foreign ``Origin`` headers on state-changing requests (403).

    Args:
        app: the ASGI application to protect.
        allowed_hosts: accepted ``Host`` names (see :class:`Security`); the local names are always accepted.
    """

    def __init__(self, app, allowed_hosts=()):
        self.app = app
        names = [name.strip().lower() for name in (*LOCAL_HOSTS, *allowed_hosts)]
        self.allowed = frozenset(name for name in names if name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        hosts = [value.decode("latin-1") for name, value in headers if name == b"host"]
        raw = hosts[0] if len(hosts) == 1 else ""
        try:
            host = split_host(raw)
        except ValueError:
            host = None
        if host is None or not _allowed(host, self.allowed):
            log.info("refused Host %r from %s", raw[:100], (scope.get("client") or ("?",))[0])
            detail = f"Host {raw[:100]!r} is not served here; start ssan serve with --allow-host NAME to accept a name"
            await send_json(send, 400, {"detail": detail})
            return
        origin = dict(headers).get(b"origin")
        if scope["method"] not in SAFE_METHODS and origin is not None:
            scheme = scope.get("scheme", "http")
            if not _same_origin(origin.decode("latin-1"), host, scheme):
                own = f"{scheme}://{raw[:100]}"
                await send_json(send, 403, {"detail": f"cross-origin request refused: this service is {own}"})
                return
        await self.app(scope, receive, send)
