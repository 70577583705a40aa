"""Measure the data layer: ``synth`` speed and ``prepare`` speed.

    python benchmarks/bench_data.py                 # full run (2-4 minutes on 2 cores)
    python benchmarks/bench_data.py --prepare-images 4000 --demo-images 1000   # quick run

Figures printed (all measured here):
1. ``synth`` of ``--synth-images`` images (default 2,000) at the default size 128x64, one process;
2. ``synth`` of ``--demo-images`` images (default 5,000) at 64x32 with 1 and 2 processes;
3. ``prepare`` of a synthetic CUHK-PEDES set of ``--prepare-images`` small images (default 40,000,
   64x32; generated first, with every core, and timed apart), run twice (second run: warm cache).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ssan.data import generate_synthetic, prepare_dataset


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _synth(out: Path, images: int, size, workers: int) -> _Timer:
    with _Timer() as timer:
        generate_synthetic(out, ids=max(1, images // 4), images_per_id=4, size=size, workers=workers, overwrite=True)
    return timer


def _line(label: str, images: int, timer: _Timer) -> None:
    print(
        f"{label:52s} wall {timer.wall:7.2f} s ({images / timer.wall:6.0f} images/s)  cpu {timer.cpu:7.2f} s",
        flush=True,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synth-images", type=int, default=2000)
    parser.add_argument("--demo-images", type=int, default=5000)
    parser.add_argument("--prepare-images", type=int, default=40000)
    parser.add_argument("--prepare-workers", type=int, default=None, help="image-checking threads (default: prepare's)")
    parser.add_argument("--dir", default=None, help="scratch folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="ssan-bench-data-"))
    cores = os.cpu_count() or 1
    print(
        f"python {sys.version.split()[0]}, {cores} CPU cores, load average {os.getloadavg()[0]:.1f}, scratch {scratch}"
    )
    try:
        images = args.synth_images // 4 * 4
        _line(f"synth {images} images 128x64, 1 process", images, _synth(scratch / "s", images, (128, 64), 1))
        demo = args.demo_images // 4 * 4
        for workers in (1, 2):
            _line(
                f"synth {demo} images 64x32, {workers} process(es)",
                demo,
                _synth(scratch / "s", demo, (64, 32), workers),
            )
        shutil.rmtree(scratch / "s", ignore_errors=True)
        n = args.prepare_images // 4 * 4
        _line(f"synth {n} images 64x32 for prepare, {cores} processes", n, _synth(scratch / "p", n, (64, 32), cores))
        for run in ("first", "second"):
            with _Timer() as timer:
                summary = prepare_dataset("cuhk-pedes", scratch / "p", workers=args.prepare_workers, overwrite=True)
            _line(f"prepare {n} images ({run} run)", n, timer)
        counts = ", ".join(f"{s} {c['images']}" for s, c in summary["splits"].items())
        print(f"prepared: {counts}; vocabulary {summary['vocab_size']}; classes {summary['num_classes']}")
        print(f"load average at the end {os.getloadavg()[0]:.1f} (other processes slow the wall-clock figures)")
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
