"""``ssan watch``: follow live cameras and append each finished track to an index as it comes.

One :class:`ssan.video.live.CameraWorker` thread per camera hands finished tracks to a queue;
the main loop (:meth:`Watcher.run`) encodes them and appends them to the store (an index
folder: :class:`ssan.search.store.FolderStore`, atomic, under the folder's lock, so a
running ``ssan serve`` picks them up) every ``flush_s`` seconds, and logs one progress line
per camera every ``progress_s`` seconds. Stopping (SIGTERM in the CLI) hands on every open
track and appends it before returning; a kill loses at most the open and queued tracks. A
restart on the same index appends to it: streams go on; a file already in the index (read
before, or forgotten since) is not read again.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ssan.search import ann
from ssan.search.builder import index_meta
from ssan.search.encoders import image_transform, load_encoders
from ssan.search.errors import GalleryIndexError
from ssan.search.store import open_store
from ssan.search.store_index import load_index
from ssan.video.cameras import Camera
from ssan.video.encode import CROPS_DIR, TrackEncoder
from ssan.video.ingest import IngestOptions
from ssan.video.live import CameraWorker, LiveOptions, is_network, source_key
from ssan.video.track_index import AGGREGATION

log = logging.getLogger(__name__)


@dataclass
class WatchOptions:
    """The main loop's settings."""

    flush_s: float = 1.0  # finished tracks are encoded and appended this often
    progress_s: float = 10.0  # one progress line per camera this often
    batch_size: int = 64
    live: LiveOptions = field(default_factory=LiveOptions)


class Watcher:
    """Cameras in, an index out.

    Args:
        out: the index folder (created, or appended to when it holds an index of tracks).
        checkpoint: the model (torch backend); cameras: what to follow; detector: a built
            person detector (:func:`ssan.video.build_detector`); ingest: sampling and crops.
        on_append: called with ``(entries, wall-clock time)`` after each append (benchmarks, tests).
    """

    def __init__(
        self,
        out,
        checkpoint,
        cameras: List[Camera],
        detector,
        ingest: IngestOptions,
        options: Optional[WatchOptions] = None,
        device: str = "cpu",
        on_append: Optional[Callable] = None,
        store=None,
    ):
        # the tracks go to ``store`` (a postgresql:// URL) when given, else to the folder ``out``; crops stay in ``out``
        self.location = store if store is not None else out
        self.store, self.options, self.ingest = open_store(self.location), options or WatchOptions(), ingest
        self.encoders, self.info = load_encoders("torch", checkpoint=checkpoint, device=device)
        self._check_existing()
        self.finished: queue.Queue = queue.Queue()
        self.encoder = TrackEncoder(
            self.encoders, image_transform(self.info), Path(out) / CROPS_DIR, self.options.batch_size
        )
        self.indexed: Dict[str, int] = {c.name: 0 for c in cameras}
        self.sources: Dict[str, dict] = {}
        self.on_append = on_append
        self.workers = [
            CameraWorker(c.name, c.url, detector, ingest, self.options.live, self._emit, self.info.height)
            for c in self._to_follow(cameras)
        ]

    def _check_existing(self) -> None:
        self.known_urls = set()
        if not self.store.exists():
            return
        index = load_index(self.location)
        if index.meta.get("content") != "tracks":
            raise GalleryIndexError(f"{self.location} is an index of images: footage goes into its own index")
        index.check_fingerprint(self.info.fingerprint, f"checkpoint {self.info.checkpoint}")
        self.known_urls = {s.get("url") for s in index.meta.get("sources", [])}

    def _to_follow(self, cameras: List[Camera]) -> List[Camera]:
        chosen = []
        for camera in cameras:
            if not is_network(camera.url) and source_key(camera.url) in self.known_urls:
                log.warning(
                    "camera %s: %s is already in the index (or forgotten): not read again", camera.name, camera.url
                )
            else:
                chosen.append(camera)
        return chosen

    def _emit(self, source, track) -> None:
        self.finished.put((source, track))

    def run(self, stop: threading.Event) -> Dict[str, int]:
        """Follow every camera until ``stop`` is set or every camera ended (files); returns tracks per camera."""
        self._started, self._shown = time.monotonic(), {}
        for worker in self.workers:
            worker.thread.start()
        shown = time.monotonic()
        while not stop.is_set() and any(w.thread.is_alive() for w in self.workers):
            stop.wait(self.options.flush_s)
            self.flush()
            if time.monotonic() - shown >= self.options.progress_s:
                self.progress()
                shown = time.monotonic()
        for worker in self.workers:
            worker.stop.set()
        for worker in self.workers:
            worker.thread.join(timeout=60)
        self.flush()
        self.progress()
        return dict(self.indexed)

    def progress(self) -> None:
        """One line per camera: frames/s since the last line, open tracks, tracks indexed, reconnects."""
        now = time.monotonic()
        for worker in self.workers:
            since, frames = self._shown.get(worker.name, (self._started, 0))
            rate = (worker.frames - frames) / max(now - since, 1e-9)
            self._shown[worker.name] = (now, worker.frames)
            log.info(
                "%s: %.1f frames/s, %d open tracks, %d tracks indexed, %d reconnects",
                worker.name,
                rate,
                worker.open_tracks,
                self.indexed[worker.name],
                worker.reconnects,
            )

    def flush(self) -> int:
        """Encode the finished tracks waiting and append them to the index; returns how many."""
        count = 0
        while True:
            try:
                source, track = self.finished.get_nowait()
            except queue.Empty:
                break
            self.encoder.add(source, track)
            self._count(source)
            count += 1
        if count:
            self._append()
        return count

    def _count(self, source) -> None:
        record = self.sources.setdefault(
            source.path,
            {
                "type": "stream",
                "path": source.path,
                "url": source.path.rsplit("#", 1)[0],
                "camera": source.camera,
                "start_time": source.start_utc,
                "time_source": source.time_source,
                "tracks": 0,
            },
        )
        record["tracks"] += 1

    def _append(self) -> None:
        vectors = self.encoder.features()
        entries = self.encoder.entries
        meta = index_meta(self.info, self.encoder.layout, ann.IndexSpec(), [], [], [])
        meta.update({"content": "tracks", "aggregation": AGGREGATION, "video": asdict(self.ingest)})
        self.store.add(entries, vectors, list(self.sources.values()), meta)
        for entry in entries:
            self.indexed[entry["camera"]] = self.indexed.get(entry["camera"], 0) + 1
        if self.on_append is not None:
            self.on_append(entries, time.time())
        self.encoder.entries, self.encoder.vectors = [], []  # appended: memory stays bounded
