"""Footage ingestion in one process against Ray Data with 1 and 2 actors (CPU, this machine).

Makes ``--files`` synthetic street videos (``--seconds`` each, 360x640, 10 fps, their MOT ground
truth without ids, so ByteTrack tracks them), an untrained synth-preset model (as bench_serve.py:
the cost per crop is the same), and indexes them sampled at 5 fps: plainly, then with
``ray="local"`` and 1 and 2 actors. Ray's fixed overhead is measured apart: starting a local
cluster, and one empty task through a one-actor Ray Data pool.

    python benchmarks/bench_ray.py --files 4 --seconds 20
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssan-bench-ray-"))
    try:
        generate_synthetic_video(
            work / "scene", seconds=args.seconds, people=8, fps=10, size=(360, 640), progress=False
        )
        words = ["<pad>", "<unk>", "a", "man", "woman", "in", "black", "red", "shirt"]  # ingestion reads no text
        checkpoint = untrained_checkpoint(work / "model.pt", words)
        (work / "det").mkdir()
        videos = []
        for i in range(args.files):
            videos.append(shutil.copy(work / "scene" / "video.mp4", work / f"cam{i}.mp4"))
            shutil.copy(work / "scene" / "gt" / "gt.txt", work / "det" / f"cam{i}.txt")
        report = {"files": args.files, "seconds_each": args.seconds, "sampled_fps": 5.0, **_overhead()}
        for name, ray, workers in (("plain", None, 1), ("ray_1_actor", "local", 1), ("ray_2_actors", "local", 2)):
            start = time.perf_counter()
            index = build_track_index(
                work / name, checkpoint, videos, detections=work / "det", options=IngestOptions(fps=5.0),
                progress=False, ray=ray, ray_workers=workers,
            )  # fmt: skip
            report[name] = {"wall_s": round(time.perf_counter() - start, 1), "tracks": len(index)}
            print(name, report[name], flush=True)
        print(json.dumps(report, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
