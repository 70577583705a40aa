"""Training steps on this machine's CPU: host syncs per step and seconds per step; prints measured figures.

A "host sync" on a GPU is any call that makes the Python side wait for the device: a value read
back (``.item()``, ``float(t)``, indexing with a 0-dim tensor, ``.tolist()``), a blocking copy
between devices, a tensor made from Python values on the device, an operator whose output size
depends on the values. They are counted at the dispatcher by :func:`ssan.engine.profiling.count_syncs`
(C++-internal reads too), except inside ``torch.optim`` and reads of the caption lengths (host
data by design). On the CPU they cost nothing, but they are the same calls. The GPU script
(``benchmarks/gpu_check.py``) also counts real syncs with ``torch.cuda.set_sync_debug_mode``.

It trains the ``synth`` preset (or ``--preset``) on a generated set for ``--steps`` steps in one
capped epoch: the first 5 steps count syncs, the others are timed (median step time), with
``--threads`` torch threads.

    python benchmarks/bench_train_step.py [--steps 30] [--preset synth] [--set k=v ...] [--threads 1]
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
    from ssan.engine.profiling import count_syncs
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
        timings, cpu_times, counter, syncs_per_step = [], [], {}, []

        counted = 5  # the first steps count syncs (the dispatcher hook slows them); the others are timed

        def step(batch, *a, **k):
            if len(syncs_per_step) < counted:
                with count_syncs(host=[v for key, v in batch.items() if "length" in key]) as syncs:
                    out = original(batch, *a, **k)
                syncs_per_step.append(syncs)
                return out
            started, cpu = time.perf_counter(), time.process_time()
            out = original(batch, *a, **k)
            timings.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu)
            return out

        trainer.train_step = step
        trainer.fit()
        print(
            f"preset {args.preset} {' '.join(args.overrides)}: {len(syncs_per_step) + len(timings)} steps, "
            f"batch {config.data.batch_size}, {args.threads} thread(s)"
        )
        warm = sorted(timings)
        if warm:
            print(f"step time: median {warm[len(warm) // 2] * 1000:.1f} ms, min {warm[0] * 1000:.1f} ms")
            cpu = sorted(cpu_times)
            print(f"CPU time per step (this process, all threads): median {cpu[len(cpu) // 2]:.2f} s")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"peak resident memory of the process: {peak:.2f} GiB")
        for sync in (s for syncs in syncs_per_step for s in syncs):
            counter[sync] = counter.get(sync, 0) + 1
        per_step = {name: count / len(syncs_per_step) for name, count in sorted(counter.items())}
        print(
            f"host syncs per step (first {len(syncs_per_step)} steps, untimed): "
            f"{sum(counter.values()) / len(syncs_per_step):.1f} {per_step}"
        )


if __name__ == "__main__":
    main()
