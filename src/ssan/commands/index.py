"""``ssan index``: encode a gallery (a folder of images, a prepared split, or footage) into a search index."""

from __future__ import annotations

import argparse

HELP = "encode a gallery (folder of images, prepared split, or footage as tracks) into a FAISS search index"

_TUNING = ("nlist", "m", "nbits", "nprobe", "refine", "hnsw_m", "ef_search", "ef_construction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="trained checkpoint (best.pt / last.pt); required with the torch backend")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images, searched recursively (jpg, png, bmp, gif, webp)")
    source.add_argument("--data", help="output folder of `ssan prepare` (keeps the identities)")
    source.add_argument(
        "--video",
        nargs="+",
        metavar="PATH",
        help="footage: video files, folders of them, folders of frames named in order; "
        "each person's track becomes one entry",
    )
    parser.add_argument("--split", default="test", help="split of --data to index (default: test)")
    parser.add_argument(
        "--out",
        required=True,
        help="index folder to write (encoded batches are kept in OUT/.partial until the index is written: "
        "an interrupted run continues where it stopped when rerun)",
    )
    parser.add_argument("--add", action="store_true", help="add new images to the index in --out (same checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an index already in --out")
    parser.add_argument(
        "--kind",
        choices=("flat", "ivfpq", "hnsw"),
        default=None,
        help="flat: exact (default); ivfpq: compressed; hnsw: graph (recall@10 is reported)",
    )
    parser.add_argument("--nlist", type=int, default=0, help="IVF-PQ clusters (0: about 4*sqrt(N))")
    parser.add_argument(
        "--m", type=int, default=0, help="IVF-PQ sub-quantisers (0: largest divisor of the width <= 64)"
    )
    parser.add_argument("--nbits", type=int, default=8, help="IVF-PQ bits per code")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF-PQ clusters visited per query")
    parser.add_argument("--refine", type=int, default=4, help="IVF-PQ: re-score refine*k candidates exactly (0: off)")
    parser.add_argument("--hnsw-m", dest="hnsw_m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef-search", dest="ef_search", type=int, default=128, help="HNSW search breadth")
    parser.add_argument("--ef-construction", dest="ef_construction", type=int, default=200, help="HNSW build breadth")
    parser.add_argument(
        "--recall-queries", type=int, default=500, help="query sample for recall@10 (approximate kinds)"
    )
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="run the encoders on")
    parser.add_argument("--onnx", help="folder of `ssan export` (onnx backend; default: OUT/onnx)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoding batch")
    parser.add_argument(
        "--workers", type=int, default=None, help="image loading processes (default: the cores but one, at most 8)"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_video_arguments(parser.add_argument_group("footage (with --video)"))


def _add_video_arguments(group) -> None:
    from ssan.video.detectors import DEFAULT_MIN_SCORE, DETECTORS
    from ssan.video.ingest import IngestOptions

    defaults = IngestOptions()
    group.add_argument(
        "--detections",
        help="person boxes in MOTChallenge format (frame,id,x,y,w,h,conf,...): "
        "a file for one source, or a folder of <video stem>.txt",
    )
    group.add_argument("--detector", choices=DETECTORS.names(), help="find the people with this detector instead")
    group.add_argument(
        "--detector-weights",
        help="local weights file of the detector (default: torchvision's cache, fetched there on first use)",
    )
    group.add_argument(
        "--min-score",
        type=float,
        default=None,
        help=f"boxes scoring this much start tracks, half as much extend them "
        f"(default: detector {DEFAULT_MIN_SCORE}, MOT file: every box)",
    )
    group.add_argument(
        "--fps", type=float, default=defaults.fps, help=f"frames sampled per second (default {defaults.fps:g})"
    )
    group.add_argument("--camera", help="camera name of these sources (default: each file's stem)")
    group.add_argument(
        "--start-time",
        help="wall-clock start of these sources, ISO 8601 with zone (2026-12-01T08:00:00Z; "
        "default: a time in the name with --time-from-name, else the container's creation_time)",
    )
    group.add_argument(
        "--time-from-name",
        metavar="PATTERN",
        help="find each source's UTC start in its file name, e.g. '%%Y%%m%%d_%%H%%M%%S'",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="ingest the files on Ray: a cluster's address, or none (or 'local') to start one here",
    )
    group.add_argument(
        "--ray-workers", type=int, default=1, help="with --ray: actors, each with the models loaded once (default 1)"
    )
    group.add_argument(
        "--segment-seconds",
        type=float,
        default=180.0,
        metavar="N",
        help="with --ray: each file is cut into segments of N seconds, one Ray row each (default 180)",
    )
    group.add_argument(
        "--segment-overlap",
        type=float,
        default=5.0,
        metavar="S",
        help="with --ray: seconds each segment is decoded past the next one's start, to join tracks (default 5)",
    )
    group.add_argument(
        "--store",
        metavar="URL",
        help="also add the new tracks to this shared store (postgresql://...); crops stay in --out",
    )
    group.add_argument("--keep-ids", action="store_true", help="use the MOT file's ids as tracks (no tracking)")
    group.add_argument(
        "--crops-per-track",
        type=int,
        default=defaults.keep,
        help=f"best crops kept and encoded per track (default {defaults.keep})",
    )
    group.add_argument(
        "--frame-rate", type=float, default=None, help="frame rate of folders of frames without a seqinfo.ini"
    )


def default_device(device) -> str:
    from ssan.devices import resolve_device

    return str(resolve_device(device))


def _workers(args) -> int:
    from ssan.devices import loader_workers
    from ssan.errors import SsanError

    if args.workers is not None and args.workers < 0:
        raise SsanError(f"--workers must be 0 or more, got {args.workers}")
    return loader_workers() if args.workers is None else args.workers


def _spec(args):
    from ssan.errors import SsanError
    from ssan.search import IndexSpec

    if args.kind is None:
        defaults = IndexSpec()
        changed = [name for name in _TUNING if getattr(args, name) != getattr(defaults, name)]
        if changed:
            raise SsanError(f"--{changed[0].replace('_', '-')} needs --kind (ivfpq or hnsw)")
        return None
    return IndexSpec(kind=args.kind, **{name: getattr(args, name) for name in _TUNING})


def _check_video_options(args) -> None:
    from ssan.errors import SsanError

    if args.video is None:
        given = [
            f"--{n.replace('_', '-')}"
            for n in (
                "detections",
                "detector",
                "detector_weights",
                "camera",
                "min_score",
                "frame_rate",
                "start_time",
                "time_from_name",
                "store",
                "ray",
            )
            if getattr(args, n) is not None
        ]
        if args.keep_ids:
            given.append("--keep-ids")
        if given:
            raise SsanError(f"{given[0]} only applies to footage (--video)")
        return
    if args.ray is not None:
        from ssan.video.segments import check_segments

        check_segments(args.segment_seconds, args.segment_overlap)
    if args.fps <= 0 or args.crops_per_track < 1:
        raise SsanError(f"--fps must be positive and --crops-per-track >= 1 (got {args.fps}, {args.crops_per_track})")
    if args.start_time is not None and args.time_from_name is not None:
        raise SsanError("--start-time and --time-from-name contradict each other: choose one")
    if args.min_score is not None and not 0 <= args.min_score <= 1:
        raise SsanError(f"--min-score must be between 0 and 1, got {args.min_score}")


def _run_video(args, spec, onnx_dir) -> int:
    from ssan.video import IngestOptions, build_track_index

    options = IngestOptions(
        fps=args.fps,
        keep=args.crops_per_track,
        min_score=args.min_score,
        keep_ids=args.keep_ids,
        frame_rate=args.frame_rate,
    )
    index = build_track_index(
        args.out,
        args.checkpoint,
        args.video,
        detections=args.detections,
        detector=args.detector,
        detector_weights=args.detector_weights,
        camera=args.camera,
        start_time=args.start_time,
        time_from_name=args.time_from_name,
        options=options,
        spec=spec,
        add=args.add,
        overwrite=args.overwrite,
        backend=args.backend,
        onnx_dir=onnx_dir,
        device=default_device(args.device),
        batch_size=args.batch_size,
        recall_queries=args.recall_queries,
        progress=not args.no_progress,
        ray=args.ray,
        ray_workers=args.ray_workers,
        segment_seconds=args.segment_seconds,
        segment_overlap=args.segment_overlap,
    )
    meta = index.meta
    sources = meta["sources"]
    print(
        f"index: {args.out} ({len(index)} tracks from {len(sources)} source(s), {index.kind}, "
        f"vector width {index.layout['dim']})"
    )
    for source in sources[-20:]:
        print(f"  {source['camera']:<16} {source['tracks']:5d} tracks  {source['frames']:7d} frames  {source['path']}")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} source(s): unreadable or refused (listed above)")
    if args.store:
        from ssan.search.store_index import publish

        print(f"store: {publish(index, args.store)} new track(s) added to {args.store.split('@')[-1]}")
    return 0


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssan import distributed
    from ssan.errors import SsanError
    from ssan.search import build_index

    if args.backend == "torch" and not args.checkpoint:
        raise SsanError("--checkpoint is required with the torch backend")
    onnx_dir = args.onnx or (str(Path(args.out) / "onnx") if args.backend == "onnx" else None)
    _check_video_options(args)
    if args.video is not None:
        return _run_video(args, _spec(args), onnx_dir)
    distributed.init_distributed(args.device)  # the entry point joins torchrun's process group
    try:
        index = build_index(
            args.out,
            args.checkpoint,
            images=args.images,
            data=args.data,
            split=args.split,
            spec=_spec(args),
            add=args.add,
            overwrite=args.overwrite,
            backend=args.backend,
            onnx_dir=onnx_dir,
            device=default_device(args.device),
            batch_size=args.batch_size,
            num_workers=_workers(args),
            recall_queries=args.recall_queries,
            progress=not args.no_progress,
        )
    finally:
        distributed.cleanup()
    if index is None:  # a non-zero rank of a torchrun launch
        return 0
    meta = index.meta
    print(f"index: {args.out} ({len(index)} images, {index.kind}, vector width {index.layout['dim']})")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} file(s): unreadable or refused (listed above)")
    if meta["index"]["recall@10"] is not None:
        print(
            f"recall@10 vs exact: {meta['index']['recall@10']:.4f} "
            f"(queries: {meta['index']['recall_queries']}, see --recall-queries)"
        )
    return 0
