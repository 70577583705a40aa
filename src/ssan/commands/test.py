"""``ssan test``: evaluate a checkpoint on a prepared split (Rank-1/5/10, mAP, mINP per term)."""

from __future__ import annotations

import argparse
import json

HELP = "evaluate a checkpoint on a prepared split: Rank-1/5/10, mAP and mINP for each feature term"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (best.pt / last.pt)")
    parser.add_argument("--data", required=True, help="output folder of `ssan prepare`")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test; val where present)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--i2t", action="store_true", help="also report image -> text retrieval")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="encoding batch size (default: the checkpoint's data.eval_batch_size)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="image loading processes (default: the cores but one, at most 8)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument(
        "--memory-budget-mb",
        type=float,
        default=512,
        help="largest similarity chunk held at once, in MiB (default: 512)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def run(args: argparse.Namespace) -> int:
    from ssan.devices import loader_workers, resolve_device
    from ssan.errors import SsanError
    from ssan.evaluation import evaluate_checkpoint, format_metrics_table

    if args.batch_size is not None and args.batch_size < 1:
        raise SsanError(f"--batch-size must be positive, got {args.batch_size}")
    if args.memory_budget_mb <= 0:
        raise SsanError(f"--memory-budget-mb must be positive, got {args.memory_budget_mb}")
    workers = loader_workers() if args.workers is None else args.workers
    if workers < 0:
        raise SsanError(f"--workers must be 0 or more, got {workers}")
    results = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        split=args.split,
        device=resolve_device(args.device),
        i2t=args.i2t,
        batch_size=args.batch_size,
        num_workers=workers,
        memory_budget_mb=args.memory_budget_mb,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(results, indent=2, sort_keys=True))
        return 0
    print(format_metrics_table(results))
    report = results.get("vocabulary")
    if report is not None:
        print(
            f"queries encoded with the checkpoint's vocabulary: {report['unknown_words']} of "
            f"{report['query_words']} words unknown (dropped), {report['dropped_captions']} caption(s) "
            f"left without a word (not queried)"
        )
    return 0
