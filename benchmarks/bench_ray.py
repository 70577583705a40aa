"""Footage ingestion in one process against Ray Data with 1 and 2 actors (CPU, this machine).

Makes ``--files`` synthetic street videos (``--seconds`` each, 360x640, 10 fps, their MOT ground
truth without ids, so ByteTrack tracks them), an untrained synth-preset model (as bench_serve.py:
the cost per crop is the same), and indexes them sampled at 5 fps: plainly, then with
``ray="local"`` and 1 and 2 actors. Ray's fixed overhead is measured apart: starting a local
cluster, and one empty task through a one-actor Ray Data pool. Ray cuts each file into segments of
``--segment-seconds`` overlapping by ``--segment-overlap``; ``same_as_plain`` says whether the Ray
index holds the plain one's tracks (ids, times, boxes, crops).

    python benchmarks/bench_ray.py --files 4 --seconds 20 --segment-seconds 5 --segment-overlap 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench_serve import untrained_checkpoint
from ssan.video import IngestOptions, build_track_index, generate_synthetic_video


class _Echo:
    def __call__(self, batch: dict) -> dict:
        return batch


def _overhead() -> dict:
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter()
    rows = ray.data.from_items([{"x": 0}]).map_batches(_Echo, batch_size=1, concurrency=1, num_cpus=0.5).take_all()
    assert rows == [{"x": 0}]
    done = time.perf_counter()
    ray.shutdown()
    return {"ray_init_s": round(started - start, 2), "one_empty_task_through_an_actor_pool_s": round(done - started, 2)}


def street_and_model(work: Path, seconds: float, people: int, size: tuple, **kwargs) -> Path:
    """A synthetic street in ``work/scene`` (10 fps) and an untrained model (ingestion reads no text)."""
    generate_synthetic_video(
        work / "scene", seconds=seconds, people=people, fps=10, size=size, progress=False, **kwargs
    )
    words = ["<pad>", "<unk>", "a", "man", "woman", "in", "black", "red", "shirt"]
    return untrained_checkpoint(work / "model.pt", words)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--segment-seconds", type=float, default=180.0)
    parser.add_argument("--segment-overlap", type=float, default=5.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssan-bench-ray-"))
    try:
        checkpoint = street_and_model(work, args.seconds, 8, (360, 640))
        (work / "det").mkdir()
        videos = []
        for i in range(args.files):
            videos.append(shutil.copy(work / "scene" / "video.mp4", work / f"cam{i}.mp4"))
            shutil.copy(work / "scene" / "gt" / "gt.txt", work / "det" / f"cam{i}.txt")
        report = {"files": args.files, "seconds_each": args.seconds, "sampled_fps": 5.0, **_overhead()}
        report.update(segment_seconds=args.segment_seconds, segment_overlap=args.segment_overlap)
        segments = {"segment_seconds": args.segment_seconds, "segment_overlap": args.segment_overlap}
        fields, plain = ("video", "track", "start", "end", "frames", "boxes"), None
        for name, ray, workers in (("plain", None, 1), ("ray_1_actor", "local", 1), ("ray_2_actors", "local", 2)):
            start = time.perf_counter()
            index = build_track_index(
                work / name, checkpoint, videos, detections=work / "det", options=IngestOptions(fps=5.0),
                progress=False, ray=ray, ray_workers=workers, **segments,
            )  # fmt: skip
            report[name] = {"wall_s": round(time.perf_counter() - start, 1), "tracks": len(index)}
            rows = [[e[f] for f in fields] for e in index.entries]
            plain = plain or rows
            report[name]["same_as_plain"] = rows == plain
            print(name, report[name], flush=True)
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
