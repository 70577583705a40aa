"""``ssan synth OUT``: write the synthetic pedestrian dataset."""

from __future__ import annotations

import argparse
import re
import time

HELP = "generate the synthetic pedestrian dataset (images + captions) in a real dataset's layout"


def _size(text: str) -> tuple:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected HxW such as 128x64, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _captions(text: str):
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected N or MIN-MAX such as 1-3, got {text!r}")
    low = int(match.group(1))
    return low if match.group(2) is None else (low, int(match.group(2)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ssan.data.formats import DATASET_FORMATS

    parser.add_argument("out", help="dataset folder to create (annotation file + imgs/)")
    parser.add_argument(
        "--format",
        dest="fmt",
        choices=DATASET_FORMATS.names(),
        default="cuhk-pedes",
        help="layout to write (default: cuhk-pedes)",
    )
    parser.add_argument("--ids", type=int, default=500, help="number of identities (default: 500)")
    parser.add_argument("--images-per-id", type=int, default=None, help="images per identity (default: 4; rstpreid: 5)")
    parser.add_argument(
        "--captions-per-image",
        type=_captions,
        default=None,
        metavar="N|MIN-MAX",
        help="captions per image (default: cuhk-pedes 1-3, icfg-pedes 1, rstpreid 2)",
    )
    parser.add_argument(
        "--size", type=_size, default=(128, 64), metavar="HxW", help="image size in pixels (default: 128x64)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--workers", type=int, default=1, help="drawing processes (default: 1)")
    parser.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="replace an existing synthetic dataset at OUT",
    )


def run(args: argparse.Namespace) -> int:
    from ssan.data.synth import generate_synthetic

    start = time.perf_counter()
    result = generate_synthetic(
        args.out,
        ids=args.ids,
        images_per_id=args.images_per_id,
        captions_per_image=args.captions_per_image,
        size=args.size,
        seed=args.seed,
        fmt=args.fmt,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    print(
        f"wrote {result['images']} images, {result['captions']} captions, {result['identities']} identities "
        f"({result['format']}, {result['size'][0]}x{result['size'][1]}) to {result['out']} in {seconds:.1f} s"
    )
    for split, counts in result["splits"].items():
        print(
            f"  {split:5s} {counts['identities']:6d} ids {counts['images']:7d} images {counts['captions']:7d} captions"
        )
    print(f"annotation: {result['annotation']}")
    return 0
