"""Measure the ceiling of the demo's text -> image retrieval: the best figures its captions allow.

    python benchmarks/bench_ceiling.py                        # generate the demo's set (about 30 s on 2 cores)
    python benchmarks/bench_ceiling.py --demo ssan-demo       # an existing `ssan demo --output ssan-demo`
    python benchmarks/bench_ceiling.py --synth S --prepared P # any synthetic set and its prepared form

Without paths, the demo's set is generated exactly as ``ssan demo`` does (``DEMO_IDS``,
``DEMO_IMAGES_PER_ID``, ``DEMO_SIZE``, seed 0, 2 workers; ``--ids`` changes the count) in a
temporary folder, then prepared. For the test and val splits it prints how many identities of
the split's gallery each caption fits (contradicts none of its facts), the oracle's figures
under both rules of ``ssan.data.synth_ceiling`` (``facts``: facts satisfied, ties by gallery
order, the issue's oracle; ``likelihood``: the Bayes ranking of the consistent ones) and the
seconds each stage took.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ssan.data import generate_synthetic, prepare_dataset
from ssan.data.prepared import load_prepared
from ssan.data.synth_ceiling import RULES, consistent_identities, load_truth, oracle_inputs, oracle_similarity
from ssan.demo import DEMO_IDS, DEMO_IMAGES_PER_ID, DEMO_SIZE
from ssan.evaluation.metrics import rank_metrics

KEYS = ("R1", "R5", "R10", "mAP", "mINP")


def _build(work: Path, ids: int) -> tuple:
    """Generate and prepare the demo's set under ``work``; returns (synth, prepared, timings)."""
    synth, prepared, timings = work / "synth", work / "prepared", {}
    started = time.perf_counter()
    generate_synthetic(synth, ids=ids, images_per_id=DEMO_IMAGES_PER_ID, size=DEMO_SIZE, seed=0, workers=2)
    timings["generate"] = time.perf_counter() - started
    started = time.perf_counter()
    prepare_dataset("cuhk-pedes", synth, prepared)
    timings["prepare"] = time.perf_counter() - started
    return synth, prepared, timings


def _report(truth: dict, prepared, split: str) -> None:
    started = time.perf_counter()
    gallery, queries, query_ids, gallery_ids = oracle_inputs(truth, prepared.records(split))
    fits = Counter(consistent_identities(gallery, queries, gallery_ids).tolist())
    print(
        f"{split}: {len(queries)} captions x {len(gallery)} images; identities a caption fits: "
        + ", ".join(f"{k}: {fits[k]}" for k in sorted(fits))
    )
    for rule in RULES:
        figures = rank_metrics(oracle_similarity(gallery, queries, rule), query_ids, gallery_ids)
        print(f"  ceiling ({rule:10s}) " + "  ".join(f"{key} {figures[key]:6.2f}" for key in KEYS))
    print(f"  scored in {time.perf_counter() - started:.2f} s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, help="an `ssan demo` output folder (its synth/ and prepared/)")
    parser.add_argument("--synth", type=Path, help="a synthetic set (with ssan-synth-truth.json)")
    parser.add_argument("--prepared", type=Path, help="its prepared folder")
    parser.add_argument("--ids", type=int, default=DEMO_IDS, help="identities when generating (default: the demo's)")
    parser.add_argument("--splits", nargs="+", default=["test", "val"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.demo is not None:
        args.synth, args.prepared = args.demo / "synth", args.demo / "prepared"
    if (args.synth is None) != (args.prepared is None):
        parser.error("give both --synth and --prepared (or --demo), or neither")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssan-ceiling-") as tmp:
        timings = {}
        if args.synth is None:
            print(
                f"generating the demo's set: {args.ids} identities x {DEMO_IMAGES_PER_ID} images at "
                f"{DEMO_SIZE[0]}x{DEMO_SIZE[1]}, seed 0, 2 workers",
                flush=True,
            )
            args.synth, args.prepared, timings = _build(Path(tmp), args.ids)
        truth, prepared = load_truth(args.synth), load_prepared(args.prepared)
        for split in args.splits:
            _report(truth, prepared, split)
    stages = "".join(f"{name} {seconds:.1f} s, " for name, seconds in timings.items())
    print(f"time: {stages}total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
