"""``ssan watch``: follow live cameras (RTSP, HTTP, UDP/TCP MPEG-TS, or files at their own pace) into an index."""

from __future__ import annotations

import argparse

from ssan.commands._retention_options import add_retention_arguments, retention_plan, start_retention

HELP = "follow live cameras and append each person's track to an index as they leave the view"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ssan.video.detectors import DEFAULT_MIN_SCORE, DETECTORS
    from ssan.video.live import LiveOptions

    live = LiveOptions()
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (best.pt / last.pt)")
    parser.add_argument("--out", required=True, help="index folder (created, or appended to; with --store: the crops)")
    parser.add_argument("--store", metavar="URL", help="append the tracks to this shared store (postgresql://...)")
    parser.add_argument(
        "--source", action="append", default=[], metavar="NAME=URL", help="a camera (repeatable; or --cameras)"
    )
    parser.add_argument("--detector", required=True, choices=DETECTORS.names(), help="person detector")
    parser.add_argument("--detector-weights", help="local weights file of the detector")
    parser.add_argument(
        "--min-score", type=float, default=DEFAULT_MIN_SCORE, help="boxes scoring this much start tracks"
    )
    parser.add_argument("--fps", type=float, default=5.0, help="frames sampled per second per camera (default 5)")
    parser.add_argument("--crops-per-track", type=int, default=8, help="best crops kept and encoded per track")
    parser.add_argument(
        "--unseen",
        type=float,
        default=live.unseen_s,
        help=f"a track unseen this long (s) is indexed ({live.unseen_s:g})",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=live.speed,
        help="files: play at this multiple of real time (0: as fast as possible)",
    )
    parser.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    add_retention_arguments(parser.add_argument_group("cameras and retention"))


def _cameras(args):
    from ssan.errors import SsanError
    from ssan.video.cameras import Camera, read_cameras

    cameras = read_cameras(args.cameras) if args.cameras else []
    for given in args.source:
        name, sep, url = given.partition("=")
        if not sep or not name.strip() or not url:
            raise SsanError(f"--source {given!r}: expected NAME=URL")
        cameras.append(Camera(name.strip(), url))
    if not cameras:
        raise SsanError("no camera: give --source NAME=URL (repeatable) or --cameras cameras.yaml")
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise SsanError(f"camera names must be unique, got {', '.join(names)}")
    return cameras


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from ssan.errors import SsanError
    from ssan.video.detectors import build_detector
    from ssan.video.ingest import IngestOptions
    from ssan.video.live import LiveOptions
    from ssan.video.watch import Watcher, WatchOptions

    cameras, plan = _cameras(args), retention_plan(args)
    if args.fps <= 0 or args.unseen <= 0 or args.speed < 0 or not 0 <= args.min_score <= 1:
        raise SsanError("--fps and --unseen must be positive, --speed >= 0, --min-score between 0 and 1")
    ingest = IngestOptions(fps=args.fps, keep=args.crops_per_track, min_score=args.min_score)
    options = WatchOptions(progress_s=args.progress_every, live=LiveOptions(unseen_s=args.unseen, speed=args.speed))
    detector = build_detector(args.detector, args.detector_weights, args.device, args.min_score / 2)
    watcher = Watcher(
        args.out, args.checkpoint, cameras, detector, ingest, options, device=args.device, store=args.store
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    schedule = start_retention(plan, args, args.store or args.out, None)
    print(f"watching {len(watcher.workers)} camera(s) into {args.out}", flush=True)
    try:
        counts = watcher.run(stop)
    finally:
        if schedule is not None:
            schedule.stop()
    print("indexed " + ", ".join(f"{name}: {n} tracks" for name, n in counts.items()), flush=True)
    return 0
