"""Measure footage indexing: ingestion speed, memory on long footage, track-level retrieval.

Stages (``--stages``, default ``ingest,detector,memory,retrieval``):
  ingest     ``ssan index --video`` from MOT detections (the scene's ground truth, ids dropped,
             so ByteTrack does the tracking) on a ``--ingest-seconds`` synthetic scene at 360x640,
             10 fps, sampled at 5 fps: frames/s and tracks/s of the whole job (decode, track,
             crop, encode, write) with the ``--checkpoint`` model.
  detector   the same footage through the smallest torchvision detector,
             ssdlite320_mobilenet_v3_large, on RANDOM weights (timing only, no quality): as
             built (every one of its 91 x 3,234 candidate scores passes the 0.001 threshold, a
             worst case for its post-processing, and it finds no person); the network alone
             (what a trained detector's cost is close to); and the whole job with the
             classification biases set so that "person" wins every anchor (300 boxes a frame,
             a worst case for tracking and cropping).
  memory     peak resident memory of ``ssan index --video`` (a child process) on a
             ``--memory-seconds`` (default 600: 10 minutes) synthetic scene at 240x432, against
             a 1-minute one: bounded memory means the two peaks are close.
  retrieval  for each walker of ``--scenes`` synthetic scenes (60 s, 24 walkers, 360x640),
             search its first caption and count how often its own track is ranked first; tracks
             from the ground truth's ids (``--keep-ids``) and from ByteTrack; aggregation of the
             crops by the mean of normalised features (what the index stores) against the
             maximum over crops at query time, from the same crop features.

    python benchmarks/bench_video.py --checkpoint ssan-demo/run/checkpoints/best.pt
        [--stages ingest,detector,memory,retrieval] [--scenes 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ssan.video import IngestOptions, build_track_index, generate_synthetic_video


def scene(out: Path, seconds: float, people: int, size=(360, 640), seed: int = 0) -> Path:
    if not (out / "people.json").is_file():
        generate_synthetic_video(out, seconds=seconds, people=people, fps=10, size=size, seed=seed, progress=False)
    return out


def without_ids(gt: Path, out: Path) -> Path:
    """The ground truth as a detector's output: ids -1, confidence 0.9."""
    lines = [
        ",".join([v[0], "-1", *v[2:6], "0.9", "-1", "-1", "-1"])
        for v in (line.split(",") for line in gt.read_text().split())
    ]
    out.write_text("\n".join(lines) + "\n")
    return out


def stage_ingest(args, work: Path) -> None:
    street = scene(work / "ingest", args.ingest_seconds, max(8, int(args.ingest_seconds / 4)))
    det = without_ids(street / "gt" / "gt.txt", work / "ingest-det.txt")
    started = time.perf_counter()
    index = build_track_index(
        work / "ingest-idx",
        args.checkpoint,
        [street / "video.mp4"],
        detections=det,
        options=IngestOptions(fps=5),
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - started
    source = index.meta["sources"][0]
    print(
        f"ingest from MOT detections: {args.ingest_seconds:.0f} s of 360x640 video, {source['frames']} sampled "
        f"frames, {len(index)} tracks in {seconds:.1f} s: {source['frames'] / seconds:.1f} frames/s, "
        f"{len(index) / seconds:.2f} tracks/s ({source['seconds']:.1f} s decoding+tracking+encoding)"
    )


def random_ssdlite(path: Path, person_only: bool) -> Path:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    if person_only:
        with torch.no_grad():
            for module in model.head.classification_head.module_list:
                bias = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1].bias.view(-1, 91)
                bias[:, 2:] = -12.0
                bias[:, 1] = 3.0
    torch.save(model.state_dict(), path)
    return path


def stage_detector(args, work: Path) -> None:
    from ssan.video import build_detector
    from ssan.video.video_file import VideoReader

    street = scene(work / "detector", args.detector_seconds, 6)
    weights = random_ssdlite(work / "ssdlite-random.pth", person_only=False)
    detector = build_detector("ssdlite320_mobilenet_v3_large", weights, min_score=0.25)
    with VideoReader(street / "video.mp4") as reader:
        frames = [f.image for f in reader.frames(args.detector_fps)]
    seconds, found = best_of(3, lambda: sum(len(boxes) for frame in frames for boxes, _ in detector([frame])))
    print(
        f"ssdlite320, random weights as built: {len(frames)} frames of 360x640 in {seconds:.1f} s (best of 3): "
        f"{len(frames) / seconds:.2f} frames/s (detector alone; {found} person boxes: it finds none)"
    )
    _time_forward(detector.model, frames)
    weights = random_ssdlite(work / "ssdlite-person.pth", person_only=True)
    started = time.perf_counter()
    index = build_track_index(
        work / "det-idx",
        args.checkpoint,
        [street / "video.mp4"],
        detector="ssdlite320_mobilenet_v3_large",
        detector_weights=weights,
        options=IngestOptions(fps=args.detector_fps, keep=2),
        overwrite=True,
        progress=False,
    )
    seconds = time.perf_counter() - started
    source = index.meta["sources"][0]
    print(
        f"ssdlite320, random weights with person-only biases: {source['frames']} frames, {len(index)} tracks "
        f"in {seconds:.1f} s: {source['frames'] / seconds:.2f} frames/s, {len(index) / seconds:.2f} tracks/s "
        "(whole job: decode, detect, track, encode)"
    )


def best_of(repeats: int, work) -> tuple:
    """(fastest wall time in seconds, result) of ``repeats`` calls of ``work()`` (the machine is shared)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


@torch.inference_mode()
def _time_forward(model, frames: list) -> None:
    """The network alone: resize to 320x320, backbone and heads, no candidate decoding or NMS."""
    images = [torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]

    def forward():
        for image in images:
            batch, _ = model.transform([image])
            model.head(list(model.backbone(batch.tensors).values()))

    seconds, _ = best_of(3, forward)
    print(f"ssdlite320 network alone (transform, backbone, heads): {len(images) / seconds:.1f} frames/s (best of 3)")


_CHILD = (
    "import resource, sys\n"
    "from ssan.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def peak_rss(args, street: Path, out: Path) -> tuple:
    """(peak resident MB, seconds) of ``ssan index --video`` run in a fresh process."""
    command = [
        sys.executable,
        "-c",
        _CHILD,
        "index",
        "--checkpoint",
        str(args.checkpoint),
        "--video",
        str(street / "video.mp4"),
        "--detections",
        str(street / "gt" / "gt.txt"),
        "--keep-ids",
        "--out",
        str(out),
        "--overwrite",
        "--no-progress",
        "--device",
        "cpu",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    line = next(x for x in done.stderr.splitlines() if x.startswith("peak-rss-kb"))
    return int(line.split()[1]) / 1024, seconds


def stage_memory(args, work: Path) -> None:
    size = (240, 432)
    for seconds, people in ((60, 15), (args.memory_seconds, int(args.memory_seconds / 4))):
        started = time.perf_counter()
        street = scene(work / f"memory-{seconds:.0f}", seconds, people, size=size, seed=7)
        made = time.perf_counter() - started
        peak, took = peak_rss(args, street, work / f"memory-idx-{seconds:.0f}")
        tracks = len(json.loads((work / f"memory-idx-{seconds:.0f}" / "meta.json").read_text())["entries"])
        print(
            f"memory: {seconds / 60:.0f} min of {size[0]}x{size[1]} video ({people} walkers, made in {made:.0f} s): "
            f"indexed {tracks} tracks in {took:.0f} s, peak RSS {peak:.0f} MB"
        )


def crop_vectors(checkpoint, street: Path, keep_ids: bool):
    """(per-track crop vectors C x F, track ids, layout widths) from the pipeline's own tracks."""
    from ssan.models import flatten_features
    from ssan.search.encoders import image_transform, load_encoders
    from ssan.video.frames import find_sources
    from ssan.video.ingest import MotBoxes, SourceIngest
    from ssan.video.mot import read_mot

    encoders, info = load_encoders("torch", checkpoint=checkpoint)
    transform = image_transform(info)
    (source,), _ = find_sources([street / "video.mp4"])
    boxes = MotBoxes(read_mot(street / "gt" / "gt.txt"), None if keep_ids else 0.5)
    tracks, owners = [], []
    for track in SourceIngest(source, boxes, IngestOptions(fps=5, keep_ids=keep_ids), info.height, False).tracks():
        feats = encoders.image(torch.stack([transform(c.image) for c in track.crops]))
        tracks.append(flatten_features(feats).numpy())
        owners.append(_owner(street, track))
    widths = [int(v[0].numel()) for v in feats.values()]
    return tracks, owners, widths, encoders, info


def _owner(street: Path, track) -> int:
    """The walker whose ground-truth box the track's best crop is."""
    best = track.crops[0]
    for line in (street / "gt" / "gt.txt").read_text().split():
        values = [float(v) for v in line.split(",")[:6]]
        if int(values[0]) == best.number and tuple(values[2:6]) == tuple(best.box):
            return int(values[1])
    return -1


def _ranks(matrix: np.ndarray, owners: list, walkers: list) -> list:
    """Rank of each query's own track (1 = first; len + 1 when the walker has no track)."""
    out = []
    for q, walker in enumerate(walkers):
        order = [owners[i] for i in np.argsort(-matrix[q], kind="stable")]
        out.append(order.index(walker) + 1 if walker in order else len(order) + 1)
    return out


def stage_retrieval(args, work: Path) -> None:
    from ssan.search.encode import encode_token_lists
    from ssan.video.aggregate import max_over_crops, mean_of_normalised

    for keep_ids in (True, False):
        ranks = {"mean": [], "max": []}
        first = {"mean": [], "max": []}
        for seed in range(args.scenes):
            street = scene(work / f"retrieval-{seed}", 60, 24, seed=100 + seed)
            tracks, owners, widths, encoders, info = crop_vectors(args.checkpoint, street, keep_ids)
            people = json.loads((street / "people.json").read_text())["people"]
            walkers = [int(k) for k in sorted(people, key=int) for _ in people[k]["captions"]]
            captions = [c for k in sorted(people, key=int) for c in people[k]["captions"]]
            queries = encode_token_lists(encoders, [info.vocab.encode(c)[0] for c in captions], info.max_length)
            means = np.stack([mean_of_normalised(t, widths) for t in tracks])
            crops = np.concatenate(tracks)
            crop_owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(tracks)])
            scores = {"mean": queries @ means.T, "max": max_over_crops(queries @ crops.T, crop_owner, len(tracks))}
            is_first = [i == 0 or walkers[i - 1] != w for i, w in enumerate(walkers)]
            for name, matrix in scores.items():
                found = _ranks(matrix, owners, walkers)
                ranks[name].extend(found)
                first[name].extend(r == 1 for r, f in zip(found, is_first) if f)
        label = "ground-truth ids (--keep-ids)" if keep_ids else "ByteTrack on the boxes"
        print(f"retrieval, tracks from {label}, {args.scenes} scenes x 24 walkers:")
        for name in ("mean", "max"):
            r = np.asarray(ranks[name])
            print(
                f"  {name:4s}: first caption of each walker {100 * np.mean(first[name]):.1f}% own track first "
                f"({len(first[name])} queries); all {len(r)} captions {100 * np.mean(r == 1):.1f}% first, "
                f"{100 * np.mean(r <= 5):.1f}% in top 5, mean rank {r.mean():.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint (e.g. ssan demo's best.pt)")
    parser.add_argument("--stages", default="ingest,detector,memory,retrieval")
    parser.add_argument("--work", default=None, help="folder for the scenes and indexes (default: a temp folder)")
    parser.add_argument("--ingest-seconds", type=float, default=120)
    parser.add_argument("--detector-seconds", type=float, default=10)
    parser.add_argument("--detector-fps", type=float, default=2)
    parser.add_argument("--memory-seconds", type=float, default=600)
    parser.add_argument("--scenes", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", 2)))
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-video-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = {"ingest": stage_ingest, "detector": stage_detector, "memory": stage_memory, "retrieval": stage_retrieval}
    for name in args.stages.split(","):
        stages[name](args, work)


if __name__ == "__main__":
    main()
