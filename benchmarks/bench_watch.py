"""Measure footage as deployments run it: `ssan watch` on a live RTSP camera, and filtered track search.

Stages (``--stages``, default ``search,delay,ssdlite,memory``):
  search   100k random tracks (``--dim`` wide) of which one camera holds 1 % and another 10 %: the
           latency of a top-10 search narrowed to each camera (the row selection included) and of an
           unfiltered one, on the exact (flat) and the compressed (IVF-PQ) index, and how many of the
           queries got all 10 results.
  delay    ffmpeg pushes a synthetic street video (360x640, 10 fps, looped, real time) to
           rtsp-server-perl; `ssan watch`'s Watcher follows it over RTSP at 5 fps with the scene's
           ground-truth boxes (a registered detector: "MOT boxes") for ``--delay-seconds``. For every
           track: the delay from the person's last sighting (its ``utc_end``, receive clock) to the
           moment its track was in the index, p50/p95; CPU seconds per second of the process (one camera).
  ssdlite  the same video as a file played at real time through torchvision's ssdlite320 on RANDOM
           weights (timing only: as built it finds nobody, so this is the detector's cost alone):
           CPU per camera and the frames/s it kept up with.
  memory   a ``--memory-minutes`` (default 60) stream, the video looped, read as a file as fast as it
           decodes with the ground-truth boxes: resident memory sampled along the way, flat or not.

The model is ``--checkpoint`` or, by default, an untrained SSAN of the synth preset's architecture
(the demo model's size; timing only).

    python benchmarks/bench_watch.py [--checkpoint CKPT] [--stages search,delay,ssdlite,memory]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the ground-truth detector

from ssan.search import ann  # noqa: E402
from ssan.search.filters import TrackColumns, TrackFilter  # noqa: E402
from ssan.search.index import GalleryIndex  # noqa: E402
from ssan.video import IngestOptions, build_detector, generate_synthetic_video, register_detector  # noqa: E402
from ssan.video.cameras import Camera  # noqa: E402
from ssan.video.live import LiveOptions  # noqa: E402
from ssan.video.watch import Watcher, WatchOptions  # noqa: E402


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def stage_search(args) -> None:
    rng = np.random.default_rng(0)
    count, dim = 100_000, args.dim
    features = rng.standard_normal((count, dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    draw = rng.random(count)
    cameras = np.where(draw < 0.01, "rare", np.where(draw < 0.11, "some", "main"))
    columns = TrackColumns(cameras.astype(object), np.zeros(count), np.zeros(count))
    queries = rng.standard_normal((args.queries, dim)).astype(np.float32)
    for kind in ("flat", "ivfpq"):
        index = _index(kind, features, rng)
        for label, chosen in (("1 %", ("rare",)), ("10 %", ("some",)), ("none", ())):
            times, full = [], 0
            for query in queries:
                started = time.perf_counter()
                rows = columns.rows(TrackFilter(chosen)) if chosen else None
                _, found = index.search(query, 10, rows=rows)
                times.append(time.perf_counter() - started)
                full += int((found[0] >= 0).sum() == 10)
            print(
                f"search {kind:5s} filter {label:4s}: p50 {1000 * percentile(times, 50):6.1f} ms, "
                f"p95 {1000 * percentile(times, 95):6.1f} ms, all 10 results for {full}/{len(queries)} queries"
            )


def _index(kind: str, features: np.ndarray, rng) -> GalleryIndex:
    spec = ann.IndexSpec(kind=kind, nlist=1024, m=64, nprobe=32).resolved(len(features), features.shape[1])
    faiss_index = ann.make_index(spec, features.shape[1])
    if kind == "ivfpq":
        ann.train(faiss_index, spec, features[rng.choice(len(features), 40_000, replace=False)])
    faiss_index.add(features)
    meta = {"index": {"kind": kind, "params": spec.to_dict()}, "entries": [{}] * len(features)}
    return GalleryIndex({**meta, "layout": {"dim": features.shape[1]}}, features, faiss_index)


def random_checkpoint(work: Path) -> Path:
    from helpers import save_random_checkpoint
    from ssan.config import load_config
    from ssan.data.prepare import prepare_dataset
    from ssan.data.synth import generate_synthetic

    generate_synthetic(work / "synth", ids=40, images_per_id=2, size=(64, 32), seed=1, fmt="cuhk-pedes")
    prepare_dataset("cuhk-pedes", work / "synth", work / "prepared")
    arch = dataclasses.asdict(load_config("synth").model)
    return save_random_checkpoint(work / "random-synth-arch.pt", work / "prepared", **arch)


def cpu_seconds() -> float:
    return time.process_time()


def follow(args, camera: Camera, detector_name: str, seconds: float, speed: float):
    """Run a Watcher on ``camera`` for ``seconds`` (or until a file ends); (watcher, appends, cpu/s, wall s)."""
    appends = []
    watcher = Watcher(
        args.work / f"idx-{detector_name}-{camera.name}",
        args.checkpoint,
        [camera],
        build_detector(detector_name, None, "cpu", 0.25),
        IngestOptions(fps=5, keep=4, min_score=0.5),
        WatchOptions(flush_s=0.5, progress_s=30, live=LiveOptions(unseen_s=2.0, speed=speed)),
        on_append=lambda entries, when: appends.append((entries, when)),
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    cpu, wall = cpu_seconds(), time.monotonic()
    thread.start()
    thread.join(timeout=seconds)
    stop.set()
    thread.join()
    return watcher, appends, (cpu_seconds() - cpu) / (time.monotonic() - wall), time.monotonic() - wall


def stage_delay(args, street: Path) -> None:
    from footage import rtsp_camera

    with rtsp_camera(street / "video.mp4", "street") as url:
        watcher, appends, cpu, wall = follow(args, Camera("street", url), "street-truth", args.delay_seconds, 1.0)
    delays = [when - _epoch(e["utc_end"]) for entries, when in appends for e in entries]
    worker = watcher.workers[0]
    print(
        f"watch over RTSP, 5 fps, MOT boxes, unseen 2 s, {wall:.0f} s: {worker.frames / wall:.1f} frames/s, "
        f"{len(delays)} tracks, leaving view -> searchable p50 {percentile(delays, 50):.2f} s, "
        f"p95 {percentile(delays, 95):.2f} s; CPU {cpu:.2f} core-seconds per second, "
        f"{1000 * cpu * wall / max(worker.frames, 1):.1f} ms per frame ({worker.reconnects} reconnects)"
    )


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def stage_ssdlite(args, street: Path) -> None:
    import torchvision

    from ssan.video.detectors import TorchvisionPersonDetector

    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    detector = TorchvisionPersonDetector(model, "cpu", 0.5)
    register_detector("ssdlite-random", overwrite=True)(lambda weights, device, min_score: detector)
    camera = Camera("street", str(street / "video.mp4"))
    watcher, _, cpu, wall = follow(args, camera, "ssdlite-random", args.ssdlite_seconds, 1.0)
    print(
        f"watch a file at real time, 5 fps, ssdlite320 (random weights), {wall:.0f} s: "
        f"{watcher.workers[0].frames / wall:.1f} frames/s kept, CPU {cpu:.2f} core-seconds per second, "
        f"{1000 * cpu * wall / max(watcher.workers[0].frames, 1):.1f} ms per frame"
    )


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stage_memory(args, street: Path) -> None:
    loops = max(1, int(args.memory_minutes * 60 / 60))
    long = args.work / "long.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-stream_loop", str(loops - 1), "-i",
         str(street / "video.mp4"), "-c", "copy", str(long)],
        check=True,
    )  # fmt: skip
    samples, done = [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rss_mb())
            done.wait(5)

    sampler = threading.Thread(target=sample)
    sampler.start()
    watcher, appends, _, wall = follow(args, Camera("long", str(long)), "street-truth", 1e9, 0.0)
    done.set()
    sampler.join()
    tracks = sum(len(entries) for entries, _ in appends)
    tenths = [samples[min(len(samples) - 1, int(len(samples) * f / 10))] for f in range(1, 11)]
    print(
        f"memory over {args.memory_minutes:.0f} min of stream ({watcher.workers[0].frames} frames, {tracks} tracks, "
        f"{wall:.0f} s): resident MB at each tenth: {', '.join(f'{v:.0f}' for v in tenths)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--stages", default="search,delay,ssdlite,memory")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--delay-seconds", type=float, default=120)
    parser.add_argument("--ssdlite-seconds", type=float, default=30)
    parser.add_argument("--memory-minutes", type=float, default=60)
    args = parser.parse_args()
    stages = args.stages.split(",")
    with tempfile.TemporaryDirectory() as work:
        args.work = Path(work)
        if "search" in stages:
            stage_search(args)
        if not set(stages) - {"search"}:
            return
        from footage import register_gt

        args.checkpoint = args.checkpoint or random_checkpoint(args.work)
        street = args.work / "street"
        generate_synthetic_video(street, seconds=60, people=24, fps=10, size=(360, 640), seed=0, progress=False)
        register_gt(street)
        if "delay" in stages:
            if shutil.which("ffmpeg") and shutil.which("rtsp-server-perl"):
                stage_delay(args, street)
            else:
                print("delay: skipped, needs ffmpeg and rtsp-server-perl")
        if "ssdlite" in stages:
            stage_ssdlite(args, street)
        if "memory" in stages:
            stage_memory(args, street)


if __name__ == "__main__":
    main()
