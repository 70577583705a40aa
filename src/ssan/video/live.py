"""Following one camera: decode its stream, track the people, hand on each track once it has left.

A camera's ``url`` is an RTSP, HTTP(S), UDP or TCP (MPEG-TS) address, opened by PyAV (FFmpeg),
or a file path, played at its own frame rate times ``speed`` (0: as fast as it decodes) for
tests and replays. Every connection is a *segment*: its frame times are the stream's
timestamps from its first frame, and its wall-clock start (``time_source: "receive"``) is the
earliest ``arrival - frame time`` seen so far (a server that sends its buffer in a burst on
connection delivers the first seconds late: the later, steady frames correct it); its tracks
are ids of that segment. A stream that fails or ends
is reopened after a growing pause (``backoff_s`` doubling up to ``max_backoff_s``); a file
that ends stops its camera. A track is handed on when unseen for ``unseen_s``; stopping the
camera hands on every open track.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, Iterator

from ssan._time import iso
from ssan.video._deps import av_module
from ssan.video.frame import Frame
from ssan.video.frames import Source
from ssan.video.ingest import DetectorBoxes, IngestOptions, SourceIngest
from ssan.video.tracks import TrackBuilder

log = logging.getLogger(__name__)

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "tcp://", "rtp://", "srt://")


@dataclass
class LiveOptions:
    """How a camera is followed (``ssan watch`` fills it)."""

    unseen_s: float = 2.0  # a track unseen this long (stream time) is handed on
    speed: float = 1.0  # files: played at this multiple of their frame rate (0: as fast as decoded)
    backoff_s: float = 1.0  # first pause before reopening a failed stream; doubles each failure
    max_backoff_s: float = 30.0
    open_timeout_s: float = 10.0  # opening and reading a network stream give up after this


def without_password(url: str) -> str:
    """``url`` without the user and password it may carry (they are never written to the index)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.username and not parts.password:
        return url
    host = parts.hostname or ""
    return urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def source_key(url: str) -> str:
    """How a camera is recorded in the index: a stream without its password, a file by its resolved path."""
    from pathlib import Path

    return without_password(url) if is_network(url) else str(Path(url).resolve())


def is_network(url: str) -> bool:
    return url.lower().startswith(NETWORK_SCHEMES)


def _open(url: str, timeout_s: float):
    av = av_module()
    # RTSP: FFmpeg's default tries RTP over UDP first, then over the TCP connection
    return av.open(url, timeout=(timeout_s, timeout_s) if is_network(url) else None)


def stream_frames(container, fps: float, speed: float, paced: bool) -> Iterator[Frame]:
    """Frames of ``container``'s video sampled at ``fps``, times from its first frame; ``paced``: real time x speed."""
    stream = container.streams.video[0]
    first, taken, number = None, 0, 0
    started = time.monotonic()
    for frame in container.decode(stream):
        number += 1
        if frame.time is None:
            continue
        first = frame.time if first is None else first
        offset = float(frame.time - first)
        if offset + 1e-6 < taken / fps:
            continue
        while taken / fps <= offset + 1e-6:
            taken += 1
        if paced and speed > 0:
            ahead = offset / speed - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)
        yield Frame(number, offset, frame.to_ndarray(format="rgb24"))


class CameraWorker:
    """Follows one camera in a thread; ``emit(source, track)`` receives each finished track.

    Attributes (read by the progress line): ``frames``, ``open_tracks``, ``tracks``, ``reconnects``.
    """

    def __init__(
        self, name: str, url: str, detector, ingest: IngestOptions, live: LiveOptions, emit: Callable, height: float
    ):
        self.name, self.url, self.detector, self.height = name, url, detector, height
        self.ingest, self.live, self.emit = ingest, live, emit
        self.frames = self.tracks = self.reconnects = self.open_tracks = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)

    def _run(self) -> None:
        pause = self.live.backoff_s
        while not self.stop.is_set():
            try:
                container = _open(self.url, self.live.open_timeout_s)
            except (av_module().FFmpegError, OSError) as exc:
                self._retry(f"cannot open {self.url}: {exc}", pause)
                pause = min(pause * 2, self.live.max_backoff_s)
                continue
            try:
                got = self._segment(container)
            except (av_module().FFmpegError, OSError) as exc:
                got, reason = True, f"{exc}"
            else:
                reason = "the stream ended"
            finally:
                container.close()
            if not is_network(self.url):
                return  # a file: played once
            pause = self.live.backoff_s if got else min(pause * 2, self.live.max_backoff_s)
            self._retry(f"{self.url}: {reason}", pause)

    def _retry(self, why: str, pause: float) -> None:
        if self.stop.is_set():
            return
        self.reconnects += 1
        log.warning("camera %s: %s; reconnecting in %.0f s", self.name, why, pause)
        self.stop.wait(pause)

    def _segment(self, container) -> bool:
        """Follow one connection until it ends or the camera stops; True when a frame arrived."""
        frames = stream_frames(container, self.ingest.fps, self.live.speed, paced=not is_network(self.url))
        first = next(frames, None)
        if first is None:
            return False
        self.anchor = time.time() - first.time
        start = iso(datetime.fromtimestamp(self.anchor, timezone.utc))
        source = Source(f"{source_key(self.url)}#{start}", "stream", self.name, start, "receive")
        ingest = SourceIngest(source, DetectorBoxes(self.detector), self.ingest, self.height, progress=False)
        ingest.idle = self.live.unseen_s
        tracker, running = _tracker_for(self.ingest), {}
        for frame in _chain(first, frames):
            self.anchor = min(self.anchor, time.time() - frame.time)
            ingest.add_frame(frame, tracker, running)
            self._hand_on(source, ingest, running, frame.time)
            self.frames += 1
            if self.stop.is_set():
                break
        self._hand_on(source, ingest, running, None)
        return True

    def _hand_on(self, source: Source, ingest: SourceIngest, running: Dict[int, TrackBuilder], now) -> None:
        for track in ingest.finished(running, now):
            self.tracks += 1
            start = iso(datetime.fromtimestamp(self.anchor, timezone.utc))
            self.emit(dataclasses.replace(source, start_utc=start), track)
        self.open_tracks = len(running)


def _tracker_for(options: IngestOptions):
    from ssan.video.tracking import ByteTracker

    return ByteTracker(options.fps, options.min_score)


def _chain(first: Frame, rest: Iterator[Frame]) -> Iterator[Frame]:
    yield first
    yield from rest
