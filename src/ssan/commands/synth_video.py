"""``ssan synth-video OUT``: write a synthetic street video with MOT ground truth and captions."""

from __future__ import annotations

import argparse
import time

from ssan.commands.synth import _size

HELP = "generate a synthetic street video (mp4 + MOT ground truth + captions of every walker)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="folder to create: video.mp4, gt/gt.txt, seqinfo.ini, people.json")
    parser.add_argument("--seconds", type=float, default=30.0, help="video length (default 30)")
    parser.add_argument("--people", type=int, default=12, help="pedestrians, each crossing once (default 12)")
    parser.add_argument("--fps", type=int, default=10, help="frames per second (default 10)")
    parser.add_argument("--size", type=_size, default=(360, 640), metavar="HxW", help="frame size (default 360x640)")
    parser.add_argument("--captions", type=int, default=3, help="captions written per person (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--overwrite",
        "--force",
        dest="overwrite",
        action="store_true",
        help="replace an existing synthetic video at OUT",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ssan.video import generate_synthetic_video

    start = time.perf_counter()
    result = generate_synthetic_video(
        args.out,
        seconds=args.seconds,
        people=args.people,
        fps=args.fps,
        size=args.size,
        seed=args.seed,
        captions=args.captions,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(
        f"wrote {result['frames']} frames ({result['size'][0]}x{result['size'][1]}, {result['fps']} fps) with "
        f"{len(result['people'])} people ({result['twin_pairs']} colour-swapped pairs) to {result['out']} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    print(f"video: {result['video']}")
    print(f"ground truth: {result['gt']}")
    print(f"captions: {result['out']}/people.json")
    return 0
