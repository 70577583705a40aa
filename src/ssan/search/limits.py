"""ASGI middlewares for limits and headers: bodies over a size limit get 413, fixed headers on every response.

:class:`BodyLimitMiddleware` reads the body before any route runs: a declared ``Content-Length``
over the limit is refused at once, and a body streamed without one (chunked
transfer) is counted as it arrives and refused as soon as it passes the limit.
A body within the limit is handed on to the application unchanged.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)


async def send_response(send, status: int, body: bytes, content_type: str, headers=()) -> None:
    """Send a complete response through a raw ASGI ``send``; ``headers`` are extra ``(name, value)`` strings."""
    fields = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(body)).encode())]
    fields += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, payload: dict, headers=()) -> None:
    """Send a complete JSON response through a raw ASGI ``send``."""
    await send_response(send, status, json.dumps(payload).encode("utf-8"), "application/json", headers)


class BodyLimitMiddleware:
    """Refuse HTTP request bodies larger than ``max_body_bytes`` (413), before the app sees them.

    Args:
        app: the ASGI application to protect.
        max_body_bytes: the largest accepted body.
    """

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    def _too_large(self) -> dict:
        return {"detail": f"request body too large: the limit is {self.max_body_bytes} bytes"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await send_json(send, 400, {"detail": "invalid Content-Length header"})
                return
            if int(declared) > self.max_body_bytes:
                await send_json(send, 413, self._too_large())
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body_bytes:
                log.debug("refused a streamed body after %d bytes", size)
                await send_json(send, 413, self._too_large())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)


class HeadersMiddleware:
    """Add fixed headers (security headers) to every HTTP response, as plain ASGI.

    Unlike a ``@app.middleware("http")`` function, it does not require the wrapped app to
    produce a response, so a client that disconnects mid-body is not logged as an error.
    """

    def __init__(self, app, headers: dict):
        self.app = app
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(name, value) for name, value in self.headers if name not in present]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _replay(body: bytes, receive):
    """A ``receive`` that first returns the buffered body, then defers to the real one."""
    delivered = False

    async def replay():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
