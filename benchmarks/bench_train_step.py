"""Training steps on this machine's CPU: host syncs per step and seconds per step; prints measured figures.

A "host sync" on a GPU is any call that makes the Python side wait for the device: reading a
value (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.numpy()``) or copying a result to
the host (``.cpu()``). On the CPU they cost nothing, but they are the same Python calls, so they are
counted here by wrapping those tensor methods for the duration of the training loop and counting
calls on floating-point and boolean tensors (integer CPU bookkeeping such as caption lengths is
not device data), except calls made inside ``torch.optim`` (Adam keeps its step counters on the
host, on a GPU too). The GPU script (``benchmarks/gpu_check.py``) counts real syncs with
``torch.cuda.set_sync_debug_mode``.

It trains the ``synth`` preset (or ``--preset``) on a generated set for ``--steps`` steps in one
capped epoch and reports the median step time after a warm-up, with ``--threads`` torch threads.

    python benchmarks/bench_train_step.py [--steps 30] [--preset synth] [--set k=v ...] [--threads 1]

The "before" figure in the README (9 reads per step in ssan 0.1) was measured with this script as of
commit cbddd26, which carried its own copy of the counter and drove ssan 0.1's ``Trainer``.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import torch


def prepare(folder: Path, ids: int) -> Path:
    from ssan.data import generate_synthetic, prepare_dataset

    generate_synthetic(folder / "synth", ids=ids, images_per_id=5, size=(64, 32), seed=0)
    prepare_dataset("cuhk-pedes", folder / "synth", folder / "prepared")
    return folder / "prepared"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--preset", default="synth")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ids", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ssan.config import load_config
    from ssan.engine.profiling import count_host_reads
    from ssan.engine.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        data = prepare(Path(tmp), args.ids)
        overrides = [
            f"train.max_steps_per_epoch={args.steps}",
            "optim.epochs=1",
            "train.eval_every=1000",
            "data.num_workers=0",
            f"train.cpu_threads={args.threads}",
            *args.overrides,
        ]
        config = load_config(args.preset, overrides)
        trainer = Trainer.from_config(config, data, Path(tmp) / "run", device="cpu")
        original = trainer.train_step
        timings, cpu_times, counter = [], [], {}

        def timed_step(*a, **k):
            started, cpu = time.perf_counter(), time.process_time()
            with count_host_reads() as reads:
                out = original(*a, **k)
            for read in reads:
                counter[read] = counter.get(read, 0) + 1
            timings.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu)
            return out

        trainer.train_step = timed_step
        trainer.fit()
        steps = len(timings)
        print(
            f"preset {args.preset} {' '.join(args.overrides)}: {steps} steps, batch {config.data.batch_size}, "
            f"{args.threads} thread(s)"
        )
        warm = sorted(timings[3:]) or sorted(timings)
        print(f"step time: median {warm[len(warm) // 2] * 1000:.1f} ms, min {warm[0] * 1000:.1f} ms")
        cpu = sorted(cpu_times[3:]) or sorted(cpu_times)
        print(f"CPU time per step (this process, all threads): median {cpu[len(cpu) // 2]:.2f} s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"peak resident memory of the process: {peak:.2f} GiB")
        per_step = {name: count / steps for name, count in sorted(counter.items())}
        print(f"host reads per step: {sum(counter.values()) / steps:.1f} {per_step}")


if __name__ == "__main__":
    main()
