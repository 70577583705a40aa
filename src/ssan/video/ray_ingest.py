"""Footage ingestion on Ray Data: each file is a row, an actor pool holds the detector and the encoders.

``ssan index --video ... --ray local`` (a local cluster) or ``--ray ADDRESS`` (a running one): the
files become a Ray dataset; ``map_batches`` sends them one at a time to a pool of
:class:`FileWorker` actors, each of which loads the encoders (and the detector) once and turns a
file into tracks exactly as the single-process path does (:func:`ssan.video.track_index._ingest`
on that one file), writing the crops into the index folder (on a cluster: a folder every node
sees). The driver collects the results in the files' order and prints one line per file as it
finishes; the index is assembled as on one machine, so it holds the same tracks. Ray restarts an
actor that dies and retries its file (a file's tracks are handed on only when the file is done,
so none is lost or counted twice).

Files are not cut into segments: one long file is one actor's work (joining tracks across segment
boundaries is not built).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ssan._extras import require
from ssan.errors import SsanError

log = logging.getLogger(__name__)

CPUS_PER_WORKER = 0.5  # fractional: 2 actors x 1 CPU left the read tasks no CPU on 2 cores and the job hung


@dataclass
class RayJob:
    """What every actor needs to turn a file into tracks (plain data: it travels to the actors)."""

    out_dir: str
    checkpoint: Optional[str]
    detections: Optional[str]
    detector_weights: Optional[str]
    onnx_dir: Optional[str]
    options: dict  # IngestOptions as a dict
    detector: Optional[str] = None
    backend: str = "torch"
    device: str = "cpu"
    batch_size: int = 64


class FileWorker:
    """A Ray actor: the encoders and the detector, loaded once; each call turns one file into tracks."""

    def __init__(self, job: dict):
        from ssan.search.encoders import load_encoders
        from ssan.video.detectors import build_detector
        from ssan.video.ingest import IngestOptions

        self.job = RayJob(**job)
        self.options = IngestOptions(**self.job.options)
        self.encoders, self.info = load_encoders(
            self.job.backend, checkpoint=self.job.checkpoint, onnx_dir=self.job.onnx_dir, device=self.job.device
        )
        self.detector = None
        if self.job.detector is not None:
            detector_weights, min_score = self.job.detector_weights, self.options.min_score / 2
            self.detector = build_detector(self.job.detector, detector_weights, self.job.device, min_score)

    def __call__(self, batch: dict) -> dict:
        return {"order": batch["order"], "result": [self.one(text) for text in batch["source"]]}

    def one(self, source_text: str) -> str:
        from ssan.search.encoders import image_transform
        from ssan.video.encode import CROPS_DIR, TrackEncoder
        from ssan.video.frames import Source
        from ssan.video.track_index import _ingest

        source = Source(**json.loads(source_text))
        crops = Path(self.job.out_dir) / CROPS_DIR
        encoder = TrackEncoder(self.encoders, image_transform(self.info), crops, self.job.batch_size)
        job, height = self.job, self.info.height
        records, skipped = _ingest([source], job.detections, self.detector, self.options, encoder, height, False)
        vectors = encoder.features()
        result = {"entries": encoder.entries, "vectors": vectors.tolist(), "layout": encoder.layout}
        return json.dumps({**result, "records": records, "skipped": skipped})


class RayTracks:
    """The tracks of many files from Ray, with the surface of a TrackEncoder the index assembly reads."""

    def __init__(self, address: str, workers: int = 1, progress: bool = True):
        if workers < 1:
            raise SsanError(f"--ray-workers must be >= 1, got {workers}")
        self.address, self.workers, self.progress = address, workers, progress
        self.entries: list = []
        self.layout: Optional[dict] = None
        self._vectors: list = []

    def features(self) -> np.ndarray:
        width = self.layout["dim"] if self.layout else 0
        return np.concatenate(self._vectors).astype(np.float32) if self._vectors else np.zeros((0, width), np.float32)

    def run(self, sources: list, job: RayJob) -> tuple:
        """Ingest ``sources`` on Ray; returns (source records, skipped [(path, reason)]) in the files' order."""
        ray = require("ray", "--ray needs Ray Data", "ray")
        started = not ray.is_initialized()
        if started:
            local = self.address == "local"
            ray.init(address=None if local else self.address, include_dashboard=False, log_to_driver=False)
        try:
            results = self._collect(ray, sources, job)
        finally:
            if started:
                ray.shutdown()
        records, skipped = [], []
        for order in sorted(results):
            result = results[order]
            self.entries += result["entries"]
            self.layout = self.layout or result["layout"]
            if result["vectors"]:
                self._vectors.append(np.asarray(result["vectors"], dtype=np.float32))
            records += result["records"]
            skipped += [tuple(s) for s in result["skipped"]]
        return records, skipped

    def _collect(self, ray, sources: list, job: RayJob) -> dict:
        items = [{"order": i, "source": json.dumps(asdict(s))} for i, s in enumerate(sources)]
        dataset = ray.data.from_items(items).map_batches(
            FileWorker,
            fn_constructor_kwargs={"job": asdict(job)},
            batch_size=1,
            concurrency=self.workers,
            num_cpus=CPUS_PER_WORKER,
            max_restarts=-1,  # a dead actor is replaced ...
            max_task_retries=-1,  # ... and its file is given to it again
        )
        results = {}
        with tqdm(total=len(sources), desc="files", unit="file", disable=not self.progress) as bar:
            for row in dataset.iter_rows():
                result = results[int(row["order"])] = json.loads(row["result"])
                name = sources[int(row["order"])].name
                log.info(
                    "%s: %d tracks (%d of %d files done)", name, len(result["entries"]), len(results), len(sources)
                )
                bar.set_postfix_str(f"{name}: {len(result['entries'])} tracks", refresh=False)
                bar.update(1)
        return results
