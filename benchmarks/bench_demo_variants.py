"""Train variants of the demo's synth preset on the demo's prepared set; prints measured figures.

Each variant is the ``synth`` preset plus ``--set``-style overrides, trained on the same data with
the same seed; the script prints, per epoch, the training time and the sum-term val and test R1,
then the last epoch's test R1 / mAP and the time of training + evaluation.

    ssan demo --output /tmp/demo                      # makes /tmp/demo/prepared
    python benchmarks/bench_demo_variants.py --prepared /tmp/demo/prepared \\
        --variant "preset:" --variant "lr1e-3:optim.lr=1e-3,optim.backbone_lr=1e-3" \\
        --variant "global-only:model.parts=false"
    python benchmarks/bench_demo_variants.py --prepared /tmp/demo/prepared --preset synth-clip  # SSAN-CLIP, tiny
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def run(prepared: Path, name: str, overrides: list, folder: Path, preset: str = "synth") -> None:
    from ssan.config import load_config
    from ssan.engine import Trainer

    started = time.perf_counter()
    results = Trainer.from_config(load_config(preset, overrides), prepared, folder / name).fit()
    seconds = time.perf_counter() - started
    for line in (folder / name / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        print(
            f"{name}: epoch {row['epoch']} {row['time_s']:.1f} s, val R1 {row.get('val/sum/R1', float('nan')):.2f}, "
            f"test R1 {row.get('test/sum/R1', float('nan')):.2f}",
            flush=True,
        )
    last = results["test_last"]["t2i"]["sum"]
    print(
        f"{name}: test R1 {last['R1']:.2f} mAP {last['mAP']:.2f}, train + evaluate {seconds:.1f} s "
        f"({preset} {' '.join(overrides) or 'as it is'})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", required=True, help="the demo's prepared folder (OUTPUT/prepared)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,key=value (repeatable)")
    parser.add_argument("--preset", default="synth", help="the preset the variants change (synth, synth-clip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.variant or ["preset:"]:
            name, _, sets = spec.partition(":")
            run(Path(args.prepared), name, [s for s in sets.split(",") if s], Path(tmp), args.preset)


if __name__ == "__main__":
    main()
