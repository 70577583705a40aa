"""The search web service: a FastAPI app over a :class:`ssan.search.Searcher`.

Routes: ``POST /api/search``, ``GET /api/images/{image_id}`` (indexed images
only, by their integer id: nothing else on disk can be reached), for an index of
footage only, ``GET /api/clips/{image_id}`` (a track's video, with Range requests) and
``GET /api/frames/{image_id}`` (its frame with the box, JPEG; :mod:`ssan.search.media`),
``GET /`` (the page), ``GET /static/...`` (its script and style), ``GET /healthz`` and
the OpenAPI schema FastAPI generates (``/openapi.json``, ``/docs``).

Before any route runs, in this order: a foreign ``Host`` gets 400 and a foreign
``Origin`` on a POST 403 (:mod:`ssan.search.security`); a request without a valid
token 401, a client that gave too many wrong ones 429 (:mod:`ssan.search.auth`;
``/healthz`` needs none); a body over ``max_body_bytes`` 413. Searches and image,
clip and frame requests are then recorded in the audit log (:mod:`ssan.search.audit`).
Malformed input gets 422 (pydantic), unusable queries 400; every error is JSON
``{"detail": ...}``. The searcher is loaded once by the caller and shared; routes
are plain functions run in FastAPI's thread pool and the searcher serialises model
calls, so concurrent requests are safe.
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from ssan.errors import SsanError
from ssan.search.audit import AuditMiddleware, note
from ssan.search.auth import AuthMiddleware
from ssan.search.errors import QueryError, StoreUnavailable
from ssan.search.filters import TrackFilter
from ssan.search.limits import BodyLimitMiddleware, HeadersMiddleware
from ssan.search.media import FrameCache, add_media_routes, image_id_of
from ssan.search.security import HostOriginMiddleware, Security

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SERVICE_MAX_QUERY_CHARS = 1000  # a web request carries a description, not a document (the library allows more)
MAX_K = 100
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self'; media-src 'self'; object-src 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


class SearchRequest(BaseModel):
    """Body of ``POST /api/search``; anything else (extra keys, wrong types) gets 422."""

    model_config = ConfigDict(extra="forbid", strict=True)
    query: str = Field(..., min_length=1, max_length=SERVICE_MAX_QUERY_CHARS, description="free-text description")
    k: int = Field(10, ge=1, le=MAX_K, description="number of results")
    cameras: Optional[List[str]] = Field(None, max_length=100, description="footage: only tracks of these cameras")
    after: Optional[str] = Field(None, max_length=40, description="footage: only tracks seen at or after (ISO 8601)")
    before: Optional[str] = Field(None, max_length=40, description="footage: only tracks seen at or before (ISO 8601)")


class SearchResult(BaseModel):
    rank: int
    image_id: int = Field(..., description="fetch the picture at /api/images/{image_id}")
    score: float = Field(..., description="SSAN similarity (sum of three cosines, at most 3)")
    id: Optional[int] = Field(None, description="identity, when the gallery came with identities")
    name: str = Field(..., description="the image's path inside its gallery")
    url: str
    # track results only (an index built with `ssan index --video`): absent from image results
    track: Optional[int] = Field(None, description="track id in its footage")
    camera: Optional[str] = None
    source: Optional[str] = Field(None, description="the footage's file or folder name")
    start: Optional[Union[str, float]] = Field(
        None, description="first seen: ISO 8601 UTC when time_base is utc, else seconds from the start of its file"
    )
    end: Optional[Union[str, float]] = Field(None, description="last seen, as start")
    offset_start: Optional[float] = Field(None, description="first seen, seconds from the start of its file")
    offset_end: Optional[float] = Field(None, description="last seen, seconds from the start of its file")
    time_base: Optional[str] = Field(None, description="utc: start/end are wall-clock times; offset: offsets only")
    frames: Optional[List[int]] = Field(None, description="1-based frame numbers of kept crops, best first")
    times: Optional[List[float]] = Field(None, description="their times, seconds")
    boxes: Optional[List[List[float]]] = Field(None, description="their boxes, [x, y, w, h] pixels")
    frame_url: Optional[str] = Field(None, description="the best crop's full frame with its box, JPEG")
    clip_url: Optional[str] = Field(None, description="the video, Range requests; null for folders of frames")


class SearchResponse(BaseModel):
    query: str
    k: int
    results: List[SearchResult]
    tokens: List[str] = Field(..., description="the words the model saw, in order")
    unknown_words: List[str] = Field(..., description="words missing from the vocabulary (ignored)")
    truncated: bool = Field(..., description="true when the query had more words than the model reads")
    attention: Dict[str, List[Tuple[str, float]]] = Field(..., description="per body part: [word, weight]")


_TRACK_RESULT_FIELDS = (
    "track",
    "camera",
    "start",
    "end",
    "offset_start",
    "offset_end",
    "time_base",
    "frames",
    "times",
    "boxes",
)


def _track_result(r: dict) -> dict:
    """The API fields of a track result: never its server paths (``video``, ``path``), only their names."""
    image_id = r["image_id"]
    return {
        **{name: r[name] for name in _TRACK_RESULT_FIELDS},
        "source": Path(r["video"]).name,
        "frame_url": f"/api/frames/{image_id}",
        "clip_url": f"/api/clips/{image_id}" if r.get("source_kind") == "video" else None,
    }


def _result(r: dict) -> dict:
    """One result of the API answer (the same fields as ever for an image; more for a track)."""
    result = {
        "rank": r["rank"],
        "image_id": r["image_id"],
        "score": r["score"],
        "id": r["id"],
        "name": r.get("name") or Path(r["path"]).name,
        "url": f"/api/images/{r['image_id']}",
    }
    return {**result, **_track_result(r)} if r.get("kind") == "track" else result


def _to_response(answer: dict) -> dict:
    results = [_result(r) for r in answer["results"]]
    return {
        "query": answer["query"],
        "k": answer["k"],
        "results": results,
        "tokens": answer["tokens"],
        "unknown_words": answer["unknown_words"],
        "truncated": answer.get("truncated", False),
        "attention": answer.get("attention", {}),
    }


async def _ssan_error(request, exc: SsanError):
    status = 400 if isinstance(exc, QueryError) else 503 if isinstance(exc, StoreUnavailable) else 500
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _internal_error(request, exc: Exception):
    log.exception("unexpected error on %s", request.url.path)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def _protect(app: FastAPI, security: Security, max_body_bytes: int) -> None:
    """Wrap the app in its middlewares; the last added runs first."""
    if security.audit is not None:
        app.add_middleware(AuditMiddleware, audit=security.audit)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)
    if security.tokens is not None:
        app.add_middleware(
            AuthMiddleware, tokens=security.tokens, throttle=security.throttle, cookie_name=security.cookie_name
        )
    app.add_middleware(HostOriginMiddleware, allowed_hosts=security.allowed_hosts)
    app.add_middleware(HeadersMiddleware, headers=_SECURITY_HEADERS)  # outermost: every refusal gets them too


def _openapi_with_bearer(app: FastAPI):
    """The schema FastAPI generates, stating that every operation but /healthz takes a bearer token."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"token": []}]
            schema["paths"]["/healthz"]["get"]["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def create_app(searcher, security: Security, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
    """The FastAPI application.

    Args:
        searcher: an object with ``search(query, k) -> dict`` (raising QueryError on unusable
            queries), ``image_file(image_id) -> Path | None`` and ``describe() -> dict``; when
            ``describe()["tracks"]`` is true (an index of footage), also ``video_file(image_id) ->
            Path | None`` and ``track(image_id) -> dict | None`` for the clip and frame routes,
            which only such an app has. Normally a :class:`ssan.search.Searcher`.
        security: tokens, accepted host names, throttle and audit log (``Security(tokens=None)``
            serves without authentication).
        max_body_bytes: larger request bodies get 413 before any route runs.
    """
    app = FastAPI(title="ssan search", description="Search a gallery of person images with a free-text description.")
    _protect(app, security, max_body_bytes)
    if security.tokens is not None:
        app.openapi = _openapi_with_bearer(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(SsanError, _ssan_error)
    app.add_exception_handler(Exception, _internal_error)

    @app.post("/api/search", response_model=SearchResponse, response_model_exclude_unset=True)
    def search(body: SearchRequest, request: Request):
        """Rank the gallery against the description; also returns the per-part word attention.

        On an index of footage each result is a track: camera, start and end, the kept crops'
        frames, times and boxes, and the addresses of its frame and clip."""
        note(request.scope, query=body.query, k=body.k)
        filters = TrackFilter.parse(body.cameras, body.after, body.before)
        if filters:
            note(request.scope, filters={"cameras": body.cameras, "after": body.after, "before": body.before})
        answer = searcher.search(body.query, k=body.k, **({"filters": filters} if filters else {}))
        note(request.scope, image_ids=[r["image_id"] for r in answer["results"]])
        return _to_response(answer)

    @app.get("/api/images/{image_id}", responses={404: {"description": "no indexed image with this id"}})
    def image(image_id: str, request: Request):
        """An indexed image, by its integer id from the search results (nothing else is served)."""
        number = image_id_of(image_id)
        path = searcher.image_file(number) if number is not None else None
        if path is None:
            return JSONResponse({"detail": "no such image"}, status_code=404)
        note(request.scope, image_ids=[number])
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})

    if searcher.describe().get("tracks"):  # an index of footage: its clips and frames, its cameras
        add_media_routes(app, searcher, FrameCache())

        @app.get("/api/cameras")
        def cameras():
            """The cameras of the indexed footage (for the page's filter)."""
            return {"cameras": searcher.cameras()}

    @app.get("/healthz")
    def healthz():
        """Liveness and what is being served."""
        return {"status": "ok", **searcher.describe()}

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return app
