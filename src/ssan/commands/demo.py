"""``ssan demo``: generate, prepare, train, evaluate and draw, on the synthetic set."""

from __future__ import annotations

import argparse

HELP = "run the whole job on the embedded synthetic pedestrian set (about 2 minutes on 2 CPU cores)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ssan.demo import DEMO_IDS, DEMO_IMAGES_PER_ID

    parser.add_argument(
        "--output", default="ssan-demo", help="folder for everything the demo makes (default: ssan-demo)"
    )
    parser.add_argument("--ids", type=int, default=DEMO_IDS, help=f"synthetic identities (default {DEMO_IDS})")
    parser.add_argument("--images-per-id", type=int, default=DEMO_IMAGES_PER_ID, help="images per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a value of the synth preset, e.g. --set model.parts=false",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    parser.add_argument(
        "--footage",
        action="store_true",
        help="then search a synthetic street video with the demo model (see ssan.video.demo)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="with --footage: search with this checkpoint (e.g. from `ssan import-clip`) instead of training",
    )


def _print_protocol_and_ceiling(metrics: dict) -> None:
    protocol, ceiling = metrics.get("reference_protocol"), metrics.get("ceiling")
    if protocol:
        print(
            f"reference protocol (max test R1 over epochs and terms, optimistic): R1 {protocol['R1']:.2f} "
            f"(epoch {protocol['epoch']}, {protocol['term']})"
        )
    if ceiling:
        sum_r1 = metrics["sum"]["R1"]
        print(
            f"ceiling of the test captions (an oracle knowing every attribute): R1 {ceiling['R1']:.2f} "
            f"R5 {ceiling['R5']:.2f} R10 {ceiling['R10']:.2f} mAP {ceiling['mAP']:.2f}; "
            f"this model's sum-term R1 {sum_r1:.2f} is {ceiling['R1'] - sum_r1:.2f} below it"
        )


def _run_footage(args: argparse.Namespace) -> int:
    from ssan.video.demo import run_footage_demo

    result = run_footage_demo(
        args.output, seed=args.seed, overrides=args.overrides, device=args.device, checkpoint=args.checkpoint
    )
    m = result["metrics"]
    print(
        f"footage: {m['tracks']} tracks; the first caption of {m['own_track_first']} of {m['walkers']} walkers "
        f"ranks its own track first ({m['own_track_first_pct']:.1f}%)"
    )
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.checkpoint is not None and not args.footage:
        from ssan.errors import SsanError

        raise SsanError("--checkpoint goes with --footage (the gallery demo trains its own model)")
    if args.footage:
        return _run_footage(args)
    from ssan.demo import run_demo
    from ssan.evaluation import format_metrics_table

    result = run_demo(
        args.output,
        ids=args.ids,
        images_per_id=args.images_per_id,
        seed=args.seed,
        overrides=args.overrides,
        device=args.device,
    )
    test = result["results"]["test_last"]
    print(f"test split: {test['num_queries']} queries x {test['num_gallery']} images (text -> image, %)")
    print(format_metrics_table(test))
    selected = result["results"].get("test_selected")
    if selected:
        label = result["results"]["test_selected_label"]
        print(
            f"sum-term figures of the {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in selected["t2i"]["sum"].items())
        )
    _print_protocol_and_ceiling(result["metrics"])
    t = result["timings"]
    print(
        f"time: generate {t['generate_s']:.0f}s, prepare {t['prepare_s']:.0f}s, "
        f"train + evaluate {t['train_and_evaluate_s']:.0f}s, total {t['total_s']:.0f}s"
    )
    for name, path in result["paths"].items():
        print(f"{name}: {path}")
    if "sheet" not in result["paths"]:
        print("pictures: skipped, matplotlib is not installed (pip install 'ssan[viz]')")
    return 0
