"""CPU figures of the CLIP route: encoding throughput, vector width, index bytes, footage speed.

Every model has RANDOM weights (timing only: no accuracy is measured or implied). Stages:

  encode   gallery images/s and queries/s of open_clip ViT-B-16 at 224x224 (a checkpoint written
           by ``ssan import-clip`` from random weights), beside the paper-size SSAN (ResNet-50 +
           Bi-LSTM, 384x128) and the demo model (the synth preset, 64x32); the vector width
           and the flat index's bytes per image (width x 4: float32 features).
  footage  ``ssan index --video`` of a ``--seconds`` synthetic street video (``ssan synth-video``,
           360x640, 10 fps, sampled at 5 fps) from its MOT boxes (ids dropped: ByteTrack tracks),
           frames/s and tracks/s of the whole job, with ViT-B-16 and with the demo model.

    python benchmarks/bench_clip.py [--stages encode,footage] [--threads 2] [--seconds 120]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from ssan.checkpoint import save_checkpoint


def clip_checkpoint(work: Path, name: str = "ViT-B-16") -> Path:
    """A CLIP checkpoint written by ``ssan import-clip`` from random ViT-B-16 weights."""
    import open_clip

    from ssan.clip.checkpoint import import_clip

    torch.manual_seed(0)
    weights = work / f"{name}-random.bin"
    torch.save(open_clip.create_model(name).state_dict(), weights)
    return Path(import_clip(name, work / f"{name}.pt", weights=weights) and work / f"{name}.pt")


def ssan_checkpoint(work: Path, preset: str, vocab_size: int = 5000) -> Path:
    """A random SSAN of ``preset`` (``synth``: the demo model; ``cuhk-pedes``: the paper's) in the schema."""
    from ssan.config import load_config
    from ssan.models import SSAN

    config = load_config(preset)
    config.model.pretrained = False
    torch.manual_seed(0)
    model = SSAN(vocab_size, config.model)
    state = {
        "arch": model.arch,
        "model": model.state_dict(),
        "vocab": ["<pad>"] + [f"w{i}" for i in range(1, vocab_size)],
        "config": config.to_dict(),
        "epoch": 0,
        "metrics": {},
    }
    return save_checkpoint(work / f"{preset}.pt", state)


def _rate(fn, count: int, repeats: int = 3) -> float:
    fn()  # warm-up
    best = min(_timed(fn) for _ in range(repeats))
    return count / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def encode_figures(checkpoint: Path, images: int, queries: int) -> dict:
    from ssan.models import flatten_features
    from ssan.search.encoders import load_torch_encoders, pad_id_lists

    encoders, info = load_torch_encoders(checkpoint)
    batch = torch.rand(images, 3, info.height, info.width) * 2 - 1
    caption = "a woman in a white coat and black trousers carrying a red bag"
    ids = info.vocab.encode(caption)[0] or [1] * 12
    tokens, lengths = pad_id_lists([ids] * queries, info.max_length)
    width = int(flatten_features(encoders.image(batch[:1])).shape[1])
    return {
        "input": f"{info.height}x{info.width}",
        "images_per_s": _rate(lambda: encoders.image(batch), images),
        "queries_per_s": _rate(lambda: encoders.text(tokens, lengths), queries),
        "width": width,
        "bytes_per_image": width * 4,
    }


def stage_encode(args, work: Path, checkpoints: dict) -> None:
    print(
        f"encoding on {args.threads} CPU threads (random weights; batch {args.images} images, {args.queries} queries)"
    )
    print("| model | input | gallery images/s | queries/s | vector width | index bytes/image |")
    print("|---|---|---|---|---|---|")
    for label, path in checkpoints.items():
        f = encode_figures(path, args.images, args.queries)
        print(
            f"| {label} | {f['input']} | {f['images_per_s']:.1f} | {f['queries_per_s']:.1f} | {f['width']} "
            f"| {f['bytes_per_image']} |"
        )


def stage_footage(args, work: Path, checkpoints: dict) -> None:
    from bench_video import scene, without_ids
    from ssan.video import IngestOptions, build_track_index

    street = scene(work / "street", args.seconds, max(8, int(args.seconds / 4)))
    det = without_ids(street / "gt" / "gt.txt", work / "det.txt")
    print(f"footage: {args.seconds:.0f} s synthetic street video, 360x640, sampled at 5 fps, boxes from its MOT file")
    print("| model | sampled frames | tracks | seconds | frames/s | tracks/s |")
    print("|---|---|---|---|---|---|")
    for label in ("ViT-B-16 (CLIP)", "demo model"):
        started = time.perf_counter()
        index = build_track_index(
            work / f"idx-{label.split()[0]}",
            checkpoints[label],
            [street / "video.mp4"],
            detections=det,
            options=IngestOptions(fps=5),
            overwrite=True,
            progress=False,
        )
        seconds = time.perf_counter() - started
        frames = index.meta["sources"][0]["frames"]
        rates = f"{frames / seconds:.1f} | {len(index) / seconds:.2f}"
        print(f"| {label} | {frames} | {len(index)} | {seconds:.1f} | {rates} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="encode,footage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=32, help="images per timed batch")
    parser.add_argument("--queries", type=int, default=64, help="queries per timed batch")
    parser.add_argument("--seconds", type=float, default=120, help="footage length")
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-clip-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = {
        "ViT-B-16 (CLIP)": clip_checkpoint(work),
        "paper-size SSAN": ssan_checkpoint(work, "cuhk-pedes"),
        "demo model": ssan_checkpoint(work, "synth"),
    }
    stages = args.stages.split(",")
    if "encode" in stages:
        stage_encode(args, work, checkpoints)
    if "footage" in stages:
        stage_footage(args, work, checkpoints)


if __name__ == "__main__":
    main()
