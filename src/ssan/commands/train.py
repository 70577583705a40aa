"""``ssan train``: train SSAN on a prepared dataset (single process, or DDP under torchrun)."""

from __future__ import annotations

import argparse
import os

HELP = "train SSAN on a prepared dataset (use torchrun for several GPUs or nodes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="synth",
        help="preset name (synth, cuhk-pedes, icfg-pedes, rstpreid, their -clip forms, synth-clip) or YAML path",
    )
    parser.add_argument("--data", required=True, help="output folder of `ssan prepare`")
    parser.add_argument("--output", required=True, help="run directory (checkpoints, metrics, config)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set optim.epochs=10 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoints/last.pt")
    parser.add_argument("--overwrite", action="store_true", help="replace a run already in OUTPUT")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")


def run(args: argparse.Namespace) -> int:
    from ssan import distributed
    from ssan.config import load_config
    from ssan.engine.runtime import CUBLAS_WORKSPACE
    from ssan.engine.trainer import Trainer

    config = load_config(args.config, args.overrides)
    if config.train.deterministic:  # before anything starts CUDA (joining the group does): cuBLAS reads it once
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    info = distributed.init_distributed(args.device)  # the entry point joins the process group
    try:
        results = Trainer.from_config(
            config, args.data, args.output, device=args.device, resume=args.resume, overwrite=args.overwrite
        ).fit()
        if info.is_main and results.get("test_last"):
            print_results(results, args.output)
    finally:
        distributed.cleanup()
    return 0


def print_results(results: dict, output) -> None:
    """The final test tables and the reference's protocol figure, labelled."""
    from ssan.evaluation import format_metrics_table

    print("test figures, last epoch:")
    print(format_metrics_table(results["test_last"]))
    if results.get("test_selected"):
        print(f"test figures, {results['test_selected_label']}:")
        print(format_metrics_table(results["test_selected"]))
    protocol = results.get("reference_protocol")
    if protocol:
        print(
            f"reference protocol (max test R1 over epochs and terms; optimistic): R1 {protocol['R1']:.2f} "
            f"R5 {protocol['R5']:.2f} R10 {protocol['R10']:.2f} mAP {protocol['mAP']:.2f} "
            f"(epoch {protocol['epoch']}, {protocol['term']})"
        )
    print(f"run directory: {output}")
