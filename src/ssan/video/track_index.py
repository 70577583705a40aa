"""Indexing footage (``ssan index --video``): one gallery entry and one vector per track.

The index is an ordinary :class:`ssan.search.GalleryIndex` (same folder, same FAISS kinds,
same checkpoint check) whose entries are tracks (fields in :mod:`ssan.search.tracks`) and
whose vectors are the tracks' aggregated features (:mod:`ssan.video.aggregate`). Damaged
or unreadable sources and unusable detection files are skipped with a warning naming
them, the rest is indexed; ``add`` encodes only the sources the index does not hold yet.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ssan.errors import SsanError
from ssan.search import ann
from ssan.search.builder import index_meta, measure_recall, open_existing, recall_sample, warn_skipped
from ssan.search.encoders import image_transform, load_encoders
from ssan.search.errors import GalleryIndexError
from ssan.search.index import GalleryIndex
from ssan.video.clock import dated
from ssan.video.detectors import DEFAULT_MIN_SCORE, build_detector
from ssan.video.encode import CROPS_DIR, TrackEncoder
from ssan.video.errors import DetectionsError
from ssan.video.frames import Source, find_sources
from ssan.video.ingest import DetectorBoxes, IngestOptions, MotBoxes, SourceIngest
from ssan.video.mot import read_mot
from ssan.video.segments import DEFAULT_OVERLAP_S, DEFAULT_SEGMENT_S, check_segments

log = logging.getLogger(__name__)

AGGREGATION = "mean-of-normalised"


def detections_file(detections: Path, source: Source) -> Path:
    """The MOT file of ``source``: ``detections`` itself (a file), or ``DIR/<file stem or folder name>.txt``."""
    if detections.is_dir():
        stem = Path(source.path).stem if source.kind == "video" else Path(source.path).name
        return detections / f"{stem}.txt"
    return detections


def _check_pairing(detections, sources: list) -> None:
    """One MOT file fits one source only: refuse before any work."""
    if detections is not None and not Path(detections).is_dir() and len(sources) > 1:
        raise SsanError(
            f"--detections {detections} is one file but {len(sources)} sources were given: pass a folder "
            "holding <video stem>.txt for each"
        )


def _boxes_for(source: Source, detections, detector, options: IngestOptions):
    if detector is not None:
        return DetectorBoxes(detector)
    mot = read_mot(detections_file(Path(detections), source))
    if options.keep_ids and not mot.has_ids:
        raise DetectionsError(
            f"--keep-ids: detections file {mot.path} has no track ids (all -1); drop --keep-ids to track its boxes"
        )
    if not options.keep_ids and mot.has_ids:
        log.info("%s carries track ids: tracking its boxes anew (pass --keep-ids to use its ids)", mot.path)
    return MotBoxes(mot, options.min_score)


def _ingest(sources, detections, detector, options, encoder, reference_height, progress):
    """Run every source; returns (source records, skipped [(path, reason)])."""
    from ssan.video.errors import VideoError

    records, skipped = [], []
    for source in sources:
        try:
            boxes = _boxes_for(source, detections, detector, options)
            ingest = SourceIngest(source, boxes, options, reference_height, progress)
            for track in ingest.tracks():
                encoder.add(source, track)
        except (VideoError, DetectionsError) as exc:
            log.warning("skipped %s", exc)
            skipped.append((source.path, str(exc)))
            continue
        stats = ingest.stats
        if not stats["tracks"]:
            log.warning(
                "%s: no person tracked (%d boxes over %d sampled frames)", source.path, stats["boxes"], stats["frames"]
            )
        records.append(source_record(source, detections, detector, stats))
    encoder.flush()
    return records, skipped


def source_record(source: Source, detections, detector, stats: dict) -> dict:
    """The index's record of an ingested source (where its boxes came from, what was found)."""
    return {
        "type": source.kind,
        "path": source.path,
        "camera": source.camera,
        "start_time": source.start_utc,
        "time_source": source.time_source,
        "detections": None if detector is not None else str(detections),
        **stats,
    }


def build_track_index(
    out_dir: Union[str, Path],
    checkpoint: Optional[Union[str, Path]],
    videos: Sequence[Union[str, Path]],
    *,
    detections: Optional[Union[str, Path]] = None,
    detector: Optional[str] = None,
    detector_weights: Optional[Union[str, Path]] = None,
    camera: Optional[str] = None,
    start_time: Optional[str] = None,
    time_from_name: Optional[str] = None,
    options: Optional[IngestOptions] = None,
    spec: Optional[ann.IndexSpec] = None,
    add: bool = False,
    overwrite: bool = False,
    backend: str = "torch",
    onnx_dir: Optional[Union[str, Path]] = None,
    device: str = "cpu",
    batch_size: int = 64,
    recall_queries: int = 500,
    progress: bool = True,
    ray: Optional[str] = None,
    ray_workers: int = 1,
    segment_seconds: float = DEFAULT_SEGMENT_S,
    segment_overlap: float = DEFAULT_OVERLAP_S,
) -> GalleryIndex:
    """Index the tracks of footage (video files, folders of them, folders of frames) into ``out_dir``.

    Args:
        videos: ``--video`` arguments; detections: a MOT file (one source) or a folder of
            ``<stem>.txt``; detector: a registered detector name instead (exactly one of the two).
        camera: camera name for every source (default: each file's stem).
        start_time: ISO 8601 UTC start of the sources; time_from_name: a ``strftime`` pattern
            finding it in each file name; neither: the container's ``creation_time`` if any
            (:mod:`ssan.video.clock`).
        options: sampling and track settings (:class:`IngestOptions`).
        ray: ``"local"`` or a cluster's address: ingest the files on Ray with ``ray_workers`` actors,
            in segments of ``segment_seconds`` overlapping by ``segment_overlap`` (:mod:`ssan.video.ray_ingest`);
            None: in this process.
        Others as :func:`ssan.search.builder.build_index`.
    """
    if ray is not None:
        check_segments(segment_seconds, segment_overlap)
    if (detections is None) == (detector is None):
        raise SsanError("give the person boxes with exactly one of --detections FILE and --detector NAME")
    options = options or IngestOptions()
    if options.keep_ids and detector is not None:
        raise SsanError("--keep-ids uses the ids of a MOT file: it needs --detections, not --detector")
    sources, refused = find_sources(videos, camera)
    sources = [dated(s, start_time, time_from_name) for s in sources]
    _check_pairing(detections, sources)
    out_dir = Path(out_dir)
    existing = open_existing(out_dir, add, overwrite)
    if existing is not None and existing.meta.get("content") != "tracks":
        raise GalleryIndexError(f"{out_dir} is an index of images: footage goes into an index of its own")
    encoders, info = load_encoders(backend, checkpoint=checkpoint, onnx_dir=onnx_dir, device=device)
    if existing is not None:
        existing.check_fingerprint(info.fingerprint, f"checkpoint {info.checkpoint}")
    known = {s.get("path") for s in existing.meta["sources"]} if existing is not None else set()
    new = [s for s in sources if s.path not in known]
    if existing is not None:
        log.info("%d source(s) already indexed, %d new", len(sources) - len(new), len(new))
        forgotten = sorted(
            {s["path"] for s in existing.meta["sources"] if s.get("forgotten")} & {s.path for s in sources}
        )
        if forgotten:
            log.warning(
                "not indexed again: %d source(s) whose tracks were forgotten (%s); --overwrite rebuilds from scratch",
                len(forgotten),
                ", ".join(forgotten[:3]),
            )
    if detector is not None and options.min_score is None:
        options = replace(options, min_score=DEFAULT_MIN_SCORE)
    if ray is not None:
        from ssan.video.ray_ingest import RayJob, RayTracks

        paths = {"out_dir": out_dir, "checkpoint": checkpoint, "detections": detections}
        paths.update(detector_weights=detector_weights, onnx_dir=onnx_dir)
        job = RayJob(**{k: str(v) if v is not None else None for k, v in paths.items()}, options=asdict(options))
        job = replace(job, detector=detector, backend=backend, device=device, batch_size=batch_size)
        job = replace(job, segment_seconds=segment_seconds, segment_overlap=segment_overlap)
        encoder = RayTracks(ray, ray_workers, progress)
        records, skipped = encoder.run(new, job)
    else:
        if detector is not None:
            detector = build_detector(detector, detector_weights, device, options.min_score / 2)
        encoder = TrackEncoder(encoders, image_transform(info), out_dir / CROPS_DIR, batch_size)
        records, skipped = _ingest(new, detections, detector, options, encoder, info.height, progress)
    skipped = refused + skipped
    warn_skipped(refused)
    return _assemble(out_dir, existing, info, encoders, encoder, records, skipped, spec, options, recall_queries)


def _assemble(out_dir, existing, info, encoders, encoder, records, skipped, spec, options, recall_queries):
    features_new = encoder.features()
    if existing is None and not len(features_new):
        raise GalleryIndexError(
            f"no track to index: {len(records)} source(s) read, {len(skipped)} skipped (see the warnings above)"
        )
    if existing is not None and not len(features_new) and not records:
        log.info("nothing new to add; %s is unchanged", out_dir)
        return existing
    layout = encoder.layout or existing.layout
    if existing is not None and existing.layout != layout:
        raise GalleryIndexError(f"new features have layout {layout}, the index holds {existing.layout}")
    old = np.asarray(existing.features, dtype=np.float32) if existing is not None else None
    features = features_new if old is None else np.concatenate([old, features_new])
    spec = spec or (existing.spec if existing is not None else ann.IndexSpec())
    faiss_index, spec = ann.build(features, spec)
    entries = (existing.entries if existing is not None else []) + encoder.entries
    sources = (existing.meta["sources"] if existing is not None else []) + records
    meta = index_meta(info, layout, spec, sources, entries, skipped)
    meta.update({"content": "tracks", "aggregation": AGGREGATION, "video": asdict(options)})
    index = GalleryIndex(meta, features, faiss_index)
    if spec.kind != "flat":
        queries, kind = recall_sample(existing, encoders, info, None, features, recall_queries, 0)
        index.queries = queries
        meta["index"].update({"recall@10": measure_recall(index, queries), "recall_queries": kind})
    index.save(out_dir)
    _remove_unused_crops(out_dir, entries)
    log.debug("indexed %d track(s) into %s", len(entries), out_dir)
    return index


def _remove_unused_crops(out_dir: Path, entries: list) -> None:
    """Crops of an earlier, failed or replaced write that no entry names."""
    used = {Path(e["path"]).name for e in entries}
    for path in (out_dir / CROPS_DIR).glob("*.jpg"):
        if path.name not in used:
            path.unlink(missing_ok=True)
