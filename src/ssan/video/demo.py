"""``ssan demo --footage``: the demo model over a synthetic street video, from its MOT ground truth.

Trains the demo model first when the output folder does not hold a finished demo (see
:mod:`ssan.demo`) and no other checkpoint is given (``--checkpoint``, e.g. a CLIP one), then
writes under the output folder::

    footage/             the synthetic street scene (``ssan synth-video``: video, gt/gt.txt, people.json)
    footage-index/       its track index (boxes from gt/gt.txt, followed by ByteTrack: no detector weights)
    footage.json         how often each walker's first caption ranks its own track first
    footage.png          the top track of some walkers' captions: best crop and full frame with the box

Each stage resumes: an existing scene or index is reused.
"""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path
from typing import Optional, Sequence, Union

log = logging.getLogger(__name__)

FOOTAGE_SECONDS = 30
FOOTAGE_PEOPLE = 12
SHEET_WALKERS = 4


def _demo_checkpoint(out: Path, seed: int, overrides: Sequence[str], device: Optional[str]) -> Path:
    """The finished demo model's checkpoint, training it first when needed."""
    if not (out / "metrics.json").is_file():
        from ssan.demo import run_demo

        log.info("training the demo model first (about 3 minutes on 2 CPU cores)")
        run_demo(out, seed=seed, overrides=overrides, device=device)
    return out / "run" / "checkpoints" / "best.pt"


def _index(out: Path, checkpoint: Path, scene: Path, device: str):
    from ssan.checkpoint import checkpoint_fingerprint
    from ssan.search import GalleryIndex
    from ssan.video.ingest import IngestOptions
    from ssan.video.track_index import build_track_index

    folder = out / "footage-index"
    if (folder / "meta.json").is_file():
        index = GalleryIndex.load(folder)
        if index.fingerprint == checkpoint_fingerprint(checkpoint):
            return index
        log.info("%s was built with another checkpoint: indexing the footage again", folder)
    return build_track_index(
        folder,
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(),
        device=device,
        overwrite=True,
    )


def _owner(result: dict, truth: dict) -> Optional[int]:
    """The walker whose ground-truth box is the track's best kept box (ByteTrack's ids are its own)."""
    frame, box = result["frames"][0], tuple(result["boxes"][0])
    return next((walker for walker, boxes in truth.items() if boxes.get(frame) == box), None)


def _truth(scene: Path) -> dict:
    truth: dict = {}
    for line in (scene / "gt" / "gt.txt").read_text(encoding="utf-8").split():
        values = [float(v) for v in line.split(",")[:6]]
        truth.setdefault(int(values[1]), {})[int(values[0])] = tuple(values[2:6])
    return truth


def run_footage_demo(
    output: Union[str, Path] = "ssan-demo",
    *,
    seed: int = 0,
    overrides: Sequence[str] = (),
    device: Optional[str] = None,
    checkpoint: Optional[Union[str, Path]] = None,
) -> dict:
    """Run the footage demo; returns ``{"metrics": ..., "paths": ...}`` (``metrics`` as ``footage.json``).

    ``checkpoint``: search with this model (e.g. a CLIP checkpoint of ``ssan import-clip``) instead
    of training the demo model.
    """
    from ssan.search import Searcher
    from ssan.video.synth import generate_synthetic_video

    out = Path(output)
    checkpoint = Path(checkpoint) if checkpoint is not None else _demo_checkpoint(out, seed, overrides, device)
    scene = out / "footage"
    if not (scene / "people.json").is_file():
        generate_synthetic_video(scene, seconds=FOOTAGE_SECONDS, people=FOOTAGE_PEOPLE, seed=seed)
    index = _index(out, checkpoint, scene, device or "cpu")
    searcher = Searcher(out / "footage-index", device=device or "cpu")
    people = json.loads((scene / "people.json").read_text(encoding="utf-8"))["people"]
    truth = _truth(scene)
    rows = []
    for walker in sorted(people, key=int):
        caption = people[walker]["captions"][0]
        results = searcher.search(caption, k=5)["results"]
        owners = [_owner(r, truth) for r in results]
        rows.append(
            {
                "walker": int(walker),
                "caption": caption,
                "top": results[0],
                "first": owners[0] == int(walker),
                "rank": owners.index(int(walker)) + 1 if int(walker) in owners else None,
            }
        )
    metrics = {
        "walkers": len(rows),
        "tracks": len(index),
        "own_track_first": sum(r["first"] for r in rows),
        "own_track_first_pct": round(100 * sum(r["first"] for r in rows) / len(rows), 2),
        "queries": [{k: r[k] for k in ("walker", "caption", "first", "rank")} for r in rows],
    }
    (out / "footage.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    paths = {"scene": scene, "index": out / "footage-index", "metrics": out / "footage.json"}
    try:
        paths["sheet"] = _sheet(rows[:SHEET_WALKERS], metrics, out / "footage.png")
    except ImportError:
        log.warning("matplotlib is not installed: no footage.png (pip install 'ssan[viz]')")
    return {"metrics": metrics, "paths": paths}


def _sheet(rows: list, metrics: dict, path: Path) -> Path:
    import matplotlib  # noqa: F401  (the viz extra; ImportError when absent)

    from ssan.video.results import track_frame
    from ssan.viz import track_sheet

    hits = []
    for row in rows:
        top = row["top"]
        frame, box = track_frame(top)
        verdict = "its own track" if row["first"] else "another walker's track"
        title = (
            f"walker {row['walker']}: {textwrap.shorten(row['caption'], 70)}\n-> {verdict}, "
            f"{top['offset_start']:.1f}-{top['offset_end']:.1f} s, track {top['track']}, score {top['score']:.2f}"
        )
        hits.append({"crop": top["path"], "frame": frame, "box": box, "title": title})
    query = (
        f"ssan demo --footage: {metrics['own_track_first']} of {metrics['walkers']} walkers' first captions "
        "rank their own track first"
    )
    return track_sheet(query, hits, path)
