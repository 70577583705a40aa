"""Token authentication of the search service, as plain ASGI middleware.

Every request but ``GET /healthz`` needs a token, presented one of three ways (the first
present is the one checked):

- ``Authorization: Bearer TOKEN`` (API clients);
- ``?token=TOKEN`` on a GET (the address ``ssan serve`` prints, the page's token form): the
  response also sets the session cookie, and the page removes the token from the address bar;
- the session cookie: HttpOnly (scripts cannot read it), SameSite=Strict (never sent with a
  request another site starts), Secure when the request came over HTTPS.

Without a valid one the answer is 401: JSON ``{"detail": ...}``, or the small "paste your
token" page for a browser asking for HTML. Wrong tokens are counted per client by a
:class:`~ssan.search.throttle.FailureThrottle` (answered slower and slower, then 429).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import math
import re
from pathlib import Path
from typing import Optional, Tuple
from urllib.parse import parse_qs

from ssan.search.limits import send_json, send_response
from ssan.search.throttle import FailureThrottle
from ssan.search.tokens import IDENTITY_KEY, Identity, TokenStore

log = logging.getLogger(__name__)

LOGIN_PAGE = Path(__file__).parent / "static" / "login.html"
OPEN_ROUTES = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})
_WRONG_TOKEN_MESSAGE = '<p class="error" id="token-error">That token was not accepted.</p>'
_CHALLENGE = ("WWW-Authenticate", 'Bearer realm="ssan"')


def _login_page() -> Tuple[bytes, bytes, str]:
    """The token page without and with the wrong-token message, and its Content-Security-Policy
    (its one inline style is allowed by hash, nothing else is: no script, no other resource)."""
    text = LOGIN_PAGE.read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode("utf-8")).digest()).decode()
    policy = f"default-src 'none'; style-src 'sha256-{digest}'; form-action 'self'; frame-ancestors 'none'"
    wrong = text.replace("<!--message-->", _WRONG_TOKEN_MESSAGE)
    return text.encode("utf-8"), wrong.encode("utf-8"), policy


def _header(scope: dict, name: bytes) -> Optional[bytes]:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value
    return None


def _cookie(scope: dict, name: str) -> Optional[bytes]:
    header = _header(scope, b"cookie")
    for part in (header or b"").split(b";"):
        key, equals, value = part.strip().partition(b"=")
        if equals and key == name.encode("latin-1"):
            return value.strip(b'"')
    return None


def credential(scope: dict, cookie_name: str) -> Optional[Tuple[str, bytes]]:
    """``(kind, value)`` of the credential a request presents (``bearer``, ``query`` or ``cookie``), or None."""
    authorization = _header(scope, b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(b" ")
        return "bearer", (value.strip() if scheme.lower() == b"bearer" else b"")
    if scope["method"] in ("GET", "HEAD"):
        tokens = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if tokens:
            return "query", tokens[0].encode("utf-8")
    value = _cookie(scope, cookie_name)
    return ("cookie", value) if value is not None else None


def _client(scope: dict) -> str:
    return str((scope.get("client") or ("unknown",))[0])


def _cookie_header(name: str, value: str, secure: bool, clear: bool = False) -> Tuple[str, str]:
    attributes = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if secure else "")
    return "Set-Cookie", f"{name}={value}{attributes}" + ("; Max-Age=0" if clear else "")


class AuthMiddleware:
    """Refuse requests without a valid token (401; 429 once a client gave too many wrong ones).

    An authenticated request carries its :class:`~ssan.search.tokens.Identity` in the ASGI scope
    under :data:`~ssan.search.tokens.IDENTITY_KEY` (the audit log reads it there).

    Args:
        app: the ASGI application to protect.
        tokens: the accepted tokens.
        throttle: counts wrong tokens per client address.
        cookie_name: name of the session cookie.
    """

    def __init__(self, app, tokens: TokenStore, throttle: FailureThrottle, cookie_name: str):
        self.app = app
        self.tokens = tokens
        self.throttle = throttle
        self.cookie_name = cookie_name
        self._page, self._wrong_page, self._page_policy = _login_page()

    def _identify(self, presented: Optional[Tuple[str, bytes]]) -> Optional[Identity]:
        if presented is None:
            return None
        kind, value = presented
        return self.tokens.match_cookie(value) if kind == "cookie" else self.tokens.match_token(value)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or (scope["method"], scope["path"]) in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return
        client = _client(scope)
        wait = self.throttle.retry_after(client)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            detail = f"too many wrong tokens from {client}: try again in {seconds} s"
            await send_json(send, 429, {"detail": detail}, [("Retry-After", str(seconds))])
            return
        presented = credential(scope, self.cookie_name)
        identity = self._identify(presented)
        if identity is None:
            await self._refuse(scope, send, presented, client)
            return
        scope[IDENTITY_KEY] = identity
        if presented[0] == "query":
            send = self._setting_cookie(send, identity, scope.get("scheme") == "https")
        await self.app(scope, receive, send)

    def _setting_cookie(self, send, identity: Identity, secure: bool):
        """``send`` with the session cookie added to the response's headers."""
        name, value = _cookie_header(self.cookie_name, self.tokens.cookie_for(identity), secure)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (name.lower().encode(), value.encode("latin-1"))]
                message = {**message, "headers": headers}
            await send(message)

        return send_with_cookie

    async def _refuse(self, scope, send, presented, client: str) -> None:
        """Answer 401 (after the throttle's delay when a wrong token was presented)."""
        headers = [_CHALLENGE, ("Cache-Control", "no-store")]
        if presented is not None:
            delay = self.throttle.failed(client)
            log.info("wrong token (%s) from %s for %s %s", presented[0], client, scope["method"], scope["path"])
            if presented[0] == "cookie":  # a cookie of an earlier run of the service: forget it
                headers.append(_cookie_header(self.cookie_name, "", scope.get("scheme") == "https", clear=True))
            await asyncio.sleep(delay)
        accept = _header(scope, b"accept") or b""
        if scope["method"] == "GET" and b"text/html" in accept:
            typed = presented is not None and presented[0] == "query"  # not a stale cookie: say it was wrong
            page = self._wrong_page if typed else self._page
            headers.append(("Content-Security-Policy", self._page_policy))
            await send_response(send, 401, page, "text/html; charset=utf-8", headers)
            return
        detail = "a token is required: send `Authorization: Bearer TOKEN` (see ssan serve's start-up line)"
        if presented is not None:
            detail = "the token was not accepted"
        await send_json(send, 401, {"detail": detail}, headers)
