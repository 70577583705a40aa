"""The media of track results in the search service: a track's clip and its frame with the box.

Routes (added by :func:`add_media_routes`, to the app of an index of footage only):

- ``GET /api/clips/{image_id}``: the source video file of a track, as found by
  ``searcher.video_file(image_id)`` (None for images, folders of frames, unknown ids, a file
  swapped since indexing: 404). Starlette's ``FileResponse`` (0.39 and later; the ``serve``
  extra asks for a version without the Range-merging CVE-2025-62727) answers Range requests
  itself: ``Accept-Ranges: bytes``, 206 with ``Content-Range`` for one range,
  ``multipart/byteranges`` for several, 416 with ``Content-Range: bytes */SIZE`` for an
  unsatisfiable one, 200 without ``Range``; ``If-Range`` against its ETag. It streams the
  file in 64 KiB chunks, never reading it whole.
- ``GET /api/frames/{image_id}``: the full frame of the track's best crop as a JPEG with the
  crop's box drawn. Decoding seeks in the video, so the JPEGs are kept in a small LRU
  (:class:`FrameCache`) and at most two frames are decoded at a time.

Both are token-protected and audited like images (the middlewares cover every route but
``/healthz``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from ssan.errors import SsanError
from ssan.search.audit import note

log = logging.getLogger(__name__)

_IMAGE_ID = re.compile(r"[0-9]{1,12}")
CACHE_CONTROL = {"Cache-Control": "private, max-age=3600"}
BOX_COLOUR = (255, 64, 0)
VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".mpg": "video/mpeg",
    ".mpeg": "video/mpeg",
    ".ts": "video/mp2t",
    ".wmv": "video/x-ms-wmv",
    ".flv": "video/x-flv",
    ".3gp": "video/3gpp",
}


def image_id_of(text: str) -> Optional[int]:
    """The integer id in a route's ``{image_id}``, or None when it is not 1-12 decimal digits."""
    return int(text) if _IMAGE_ID.fullmatch(text) else None


def video_type(path: Path) -> str:
    """The media type of a video file, by its suffix (``application/octet-stream`` if unknown)."""
    return VIDEO_TYPES.get(path.suffix.lower(), "application/octet-stream")


def clip_response(path: Path) -> Optional[FileResponse]:
    """A Range-capable response streaming the video ``path``; None when it is no longer a regular file."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return FileResponse(path, media_type=video_type(path), stat_result=info, headers=CACHE_CONTROL)


def frame_jpeg(track: dict, which: int = 0, quality: int = 85) -> bytes:
    """The frame of kept crop ``which`` of ``track`` (a track entry or result) as JPEG bytes, its box drawn.

    Raises SsanError (VideoError) or OSError when the source can no longer be read.
    """
    from PIL import Image, ImageDraw

    from ssan.video import track_frame

    image, (x, y, w, h) = track_frame(track, which)
    picture = Image.fromarray(image)
    width = max(2, round(min(picture.size) / 150))
    ImageDraw.Draw(picture).rectangle([x, y, x + w - 1, y + h - 1], outline=BOX_COLOUR, width=width)
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality, subsampling=0)  # 4:4:4: the thin box keeps its colour
    return buffer.getvalue()


class FrameCache:
    """JPEG frames by image id: a bounded LRU, safe from many threads, with bounded concurrent decoding.

    Args:
        render: ``render(track) -> bytes`` (default :func:`frame_jpeg`).
        size: frames kept (a 640x360 JPEG is about 50 KB).
        decoders: frames decoded at the same time at most (each is a seek and a decode).
    """

    def __init__(self, render: Callable[[dict], bytes] = frame_jpeg, size: int = 64, decoders: int = 2):
        if size < 1 or decoders < 1:
            raise SsanError(f"a frame cache needs size >= 1 and decoders >= 1, got {size} and {decoders}")
        self.render = render
        self.size = int(size)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._decoding = threading.BoundedSemaphore(decoders)
        self.generation = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, image_id: int, track: dict, generation: int = 0) -> bytes:
        """The JPEG of ``track`` (indexed as ``image_id`` in index ``generation``), rendered on first use.

        A new ``generation`` (the index was reloaded after an erasure) empties the cache first.
        """
        with self._lock:
            if generation != self.generation:  # the index was rewritten (an erasure): its frames go too
                self._items.clear()
                self.generation = generation
            if image_id in self._items:
                self._items.move_to_end(image_id)
                return self._items[image_id]
        with self._decoding:
            data = self.render(track)
        with self._lock:
            if generation != self.generation:
                return data  # rendered from an index replaced meanwhile: not kept
            self._items[image_id] = data
            self._items.move_to_end(image_id)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return data


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"detail": f"no such {what}"}, status_code=404)


def add_media_routes(app: FastAPI, searcher, frames: FrameCache) -> None:
    """Add ``GET /api/clips/{image_id}`` and ``GET /api/frames/{image_id}`` to ``app``.

    ``searcher`` needs ``video_file(image_id) -> Path | None`` and ``track(image_id) -> dict | None``
    (see :class:`ssan.search.Searcher`).
    """
    missing = {404: {"description": "no track with a clip (or a frame) under this id"}}
    partial = {206: {"description": "the requested byte range"}, 416: {"description": "range not satisfiable"}}

    @app.get("/api/clips/{image_id}", responses={**missing, **partial}, response_class=FileResponse)
    def clip(image_id: str, request: Request):
        """The source video of a track result, with HTTP Range requests (none for folders of frames)."""
        number = image_id_of(image_id)
        path = searcher.video_file(number) if number is not None else None
        response = clip_response(path) if path is not None else None
        if response is None:
            return _not_found("clip")
        note(request.scope, image_ids=[number])
        return response

    @app.get("/api/frames/{image_id}", responses=missing, response_class=Response)
    def frame(image_id: str, request: Request):
        """The full frame of a track result's best crop, JPEG, with the crop's box drawn."""
        number = image_id_of(image_id)
        track = searcher.track(number) if number is not None else None
        if track is None or (track.get("source_kind") == "video" and searcher.video_file(number) is None):
            return _not_found("frame")
        try:
            data = frames.get(number, track, getattr(searcher, "generation", 0))
        except (SsanError, OSError) as exc:
            log.warning("no frame for track result %d: %s", number, exc)
            return JSONResponse({"detail": "the frame of this track cannot be read"}, status_code=404)
        note(request.scope, image_ids=[number])
        return Response(data, media_type="image/jpeg", headers=CACHE_CONTROL)
