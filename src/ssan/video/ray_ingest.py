"""Footage ingestion on Ray Data: each row is a time segment of a file, an actor pool holds the models.

``ssan index --video ... --ray local`` (a local cluster) or ``--ray ADDRESS`` (a running one): every
file is cut into segments of ``--segment-seconds`` that overlap by ``--segment-overlap``
(:func:`ssan.video.segments.plan_segments`; a folder of frames is one segment); the segments
become a Ray dataset whose ``map_batches`` sends them one at a time to a pool of
:class:`SegmentWorker` actors. Each actor loads the encoders (and the detector) once; per
segment it decodes that time range only, tracks it and returns the tracked boxes with the
features of the crops that may be chosen (the crops' pictures go into the index folder: on a
cluster, a folder every node sees). The driver joins the segments' pieces of each track
(:mod:`ssan.video.segment_join`) and prints one line per file as its last segment arrives.
Ray restarts an actor that dies and retries its segment (a segment's result is handed on only
when it is done, so no track is lost or counted twice).
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
from ssan.video.frames import Source
from ssan.video.segments import DEFAULT_OVERLAP_S, DEFAULT_SEGMENT_S, plan_segments

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
    segment_seconds: float = DEFAULT_SEGMENT_S
    segment_overlap: float = DEFAULT_OVERLAP_S


class SegmentWorker:
    """A Ray actor: the encoders and the detector, loaded once; each call turns one segment into pieces."""

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
        return {"order": batch["order"], "result": [self.one(text) for text in batch["segment"]]}

    def one(self, row_text: str) -> str:
        from ssan.video.errors import DetectionsError, VideoError
        from ssan.video.segments import Segment, SegmentIngest
        from ssan.video.track_index import _boxes_for

        row = json.loads(row_text)
        source, segment = Source(**row["source"]), Segment(**row["segment"])
        try:
            boxes = _boxes_for(source, self.job.detections, self.detector, self.options)
            result = SegmentIngest(source, boxes, self.options, self.info.height, False).run(segment)
        except (VideoError, DetectionsError) as exc:
            return json.dumps({"error": str(exc)})
        candidates = result.pop("candidates")
        result["features"], result["layout"] = self.encode(source, candidates)
        return json.dumps(result)

    def encode(self, source, candidates: dict) -> tuple:
        """Each candidate crop's flattened feature (and the layout); its picture goes into the index folder."""
        import torch

        from ssan._files import open_private, private_dir
        from ssan.models import flatten_features
        from ssan.search.encode import layout_of
        from ssan.search.encoders import image_transform
        from ssan.video.encode import CROPS_DIR
        from ssan.video.segment_join import candidate_name

        crops, transform = private_dir(Path(self.job.out_dir) / CROPS_DIR), image_transform(self.info)
        keys, features, layout = list(candidates), {}, None
        for start in range(0, len(keys), self.job.batch_size):
            chunk = keys[start : start + self.job.batch_size]
            feats = self.encoders.image(torch.stack([transform(candidates[k]) for k in chunk]))
            layout = layout or layout_of(feats)
            for (number, row), vector in zip(chunk, flatten_features(feats).numpy()):
                features[f"{number}:{row}"] = vector.tolist()
                with open_private(crops / candidate_name(source, number, row)) as handle:
                    candidates[(number, row)].save(handle, "JPEG", quality=90)
        return features, layout


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
        plans, skipped = self._plan(sources, job)
        started = not ray.is_initialized()
        if started:
            local = self.address == "local"
            ray.init(address=None if local else self.address, include_dashboard=False, log_to_driver=False)
        try:
            results = self._collect(ray, plans, job)
        finally:
            if started:
                ray.shutdown()
        records = []
        for i, (source, segments) in enumerate(plans):
            done = [results[(i, s.index)] for s in segments]
            reason = self._failed(source, done)
            if reason:
                log.warning("skipped %s", reason)
                skipped.append((source.path, reason))
                continue
            records.append(self._join(source, segments, done, job))
        return records, skipped

    def _plan(self, sources: list, job: RayJob) -> tuple:
        from ssan.video.errors import VideoError
        from ssan.video.video_file import VideoReader

        plans, skipped = [], []
        for source in sources:
            duration = None
            if source.kind == "video":
                try:
                    with VideoReader(source.path) as reader:
                        duration = reader.duration
                except VideoError as exc:
                    log.warning("skipped %s", exc)
                    skipped.append((source.path, str(exc)))
                    continue
            plans.append((source, plan_segments(duration, job.segment_seconds, job.segment_overlap)))
        return plans, skipped

    @staticmethod
    def _failed(source, results: list) -> Optional[str]:
        errors = [r["error"] for r in results if "error" in r]
        if errors:
            return errors[0]
        used = [r["used_frames"] for r in results]
        if all(u == 0 for u in used):
            return f"detections file of {source.path}: none of its frame numbers is a sampled frame of the footage"
        return None

    def _join(self, source, segments: list, results: list, job: RayJob) -> dict:
        from ssan.video.encode import CROPS_DIR
        from ssan.video.ingest import IngestOptions
        from ssan.video.segment_join import join_segments
        from ssan.video.track_index import source_record

        self.layout = self.layout or next((r["layout"] for r in results if r["layout"]), None)
        widths = self.layout["widths"] if self.layout else []
        features = [{k: np.asarray(v, np.float32) for k, v in r["features"].items()} for r in results]
        results = [{**r, "features": f} for r, f in zip(results, features)]
        crops = Path(job.out_dir) / CROPS_DIR
        entries, vectors, stats = join_segments(source, segments, results, IngestOptions(**job.options), crops, widths)
        self.entries += entries
        if vectors:
            self._vectors.append(np.stack(vectors))
        return source_record(source, job.detections, job.detector, stats)

    def _collect(self, ray, plans: list, job: RayJob) -> dict:
        items = [
            {"order": [i, s.index], "segment": json.dumps({"source": asdict(source), "segment": asdict(s)})}
            for i, (source, segments) in enumerate(plans)
            for s in segments
        ]
        dataset = ray.data.from_items(items).map_batches(
            SegmentWorker,
            fn_constructor_kwargs={"job": asdict(job)},
            batch_size=1,
            concurrency=self.workers,
            num_cpus=CPUS_PER_WORKER,
            max_restarts=-1,  # a dead actor is replaced ...
            max_task_retries=-1,  # ... and its segment is given to it again
        )
        results: dict = {}
        left = {i: len(segments) for i, (_, segments) in enumerate(plans)}
        with tqdm(total=len(items), desc="segments", unit="segment", disable=not self.progress) as bar:
            for row in dataset.iter_rows():
                file, index = (int(v) for v in row["order"])
                results[(file, index)] = json.loads(row["result"])
                left[file] -= 1
                if not left[file]:
                    done = sum(1 for n in left.values() if not n)
                    log.info(
                        "%s: all %d segments done (%d of %d files)",
                        plans[file][0].name,
                        len(plans[file][1]),
                        done,
                        len(plans),
                    )
                bar.update(1)
        return results
