"""The embedded default for footage (``ssan synth-video``): a synthetic street scene with ground truth.

Writes, atomically::

    OUT/video.mp4     H.264, ``fps`` frames per second
    OUT/gt/gt.txt     MOTChallenge ground truth: ``frame,id,x,y,w,h,1,1,visibility`` (1-based
                      frames, boxes clipped to the frame, visibility = share of the figure not
                      hidden by nearer walkers or the frame edge)
    OUT/seqinfo.ini   the MOTChallenge sequence description (frame rate, length, size)
    OUT/people.json   ``{"generator": "ssan-synth-video", ..., "people": {"<id>": {"captions",
                      "attributes", "twin", "start", "end", "first_frame", "last_frame", "direction"}}}``

The pedestrians are ``ssan synth``'s identities (:func:`ssan.data._synth_people.sample_identities`,
colour-swapped twins included) and their captions come from the same grammar. Everything
derives from ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from fractions import Fraction
from pathlib import Path
from typing import Tuple, Union

import numpy as np
from tqdm.auto import tqdm

from ssan.data._io import atomic_directory
from ssan.data._synth_people import sample_identities
from ssan.data._synth_text import caption
from ssan.errors import DataError
from ssan.video._deps import av_module
from ssan.video._scene import SceneRenderer, plan_walkers

log = logging.getLogger(__name__)

GENERATOR = "ssan-synth-video"
PEOPLE_FILE = "people.json"
VIDEO_FILE = "video.mp4"
GT_FILE = "gt/gt.txt"
TWIN_FRACTION = 0.3  # share of identities drawn as colour-swapped pairs


def _check(seconds: float, people: int, fps: int, size: Tuple[int, int], captions: int) -> None:
    if not seconds > 0 or people < 1 or captions < 1:
        raise DataError(f"seconds, people and captions must be positive (got {seconds}, {people}, {captions})")
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 120:
        raise DataError(f"fps must be a whole number between 1 and 120, got {fps!r}")
    if size[0] < 64 or size[1] < 64 or size[0] % 2 or size[1] % 2:
        raise DataError(f"frame size must be even and at least 64x64 (HxW), got {size[0]}x{size[1]}")


def _may_replace(out: Path, overwrite: bool) -> bool:
    if not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory")
    if not any(out.iterdir()):
        return True
    if not (out / PEOPLE_FILE).is_file():
        raise DataError(f"output {out} is not empty and is not a synthetic video; refusing to replace it")
    if not overwrite:
        raise DataError(f"output {out} already holds a synthetic video; use --overwrite to replace it")
    return True


def _open_writer(path: Path, fps: int, height: int, width: int):
    av = av_module()
    container = av.open(str(path), mode="w", options={"movflags": "faststart"})  # index first: plays while loading
    stream = container.add_stream("libx264", rate=Fraction(fps, 1))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"crf": "18", "preset": "veryfast", "g": str(2 * fps)}
    return container, stream


def _write_frames(renderer: SceneRenderer, path: Path, fps: int, count: int, progress: bool) -> dict:
    """Encode ``count`` frames; returns ``{track: [(frame, box, visibility), ...]}``."""
    av = av_module()
    container, stream = _open_writer(path, fps, renderer.height, renderer.width)
    rows: dict = {}
    try:
        for index in tqdm(range(count), desc="drawing frames", unit="frame", disable=not progress, leave=False):
            image, people = renderer.render(index / fps, index)
            for person in people:
                rows.setdefault(person["track"], []).append((index + 1, person["box"], person["visibility"]))
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    finally:
        container.close()
    return rows


def _gt_lines(rows: dict) -> list:
    lines = [(frame, track, box, vis) for track, seen in rows.items() for frame, box, vis in seen]
    lines.sort(key=lambda item: (item[0], item[1]))
    return [f"{f},{t},{b[0]},{b[1]},{b[2]},{b[3]},1,1,{v:g}" for f, t, b, v in lines]


def _people_entry(walker, captions: list, twin, seen: list, fps: int) -> dict:
    first, last = seen[0][0], seen[-1][0]
    return {
        "captions": captions,
        "attributes": dataclasses.asdict(walker.person),
        "twin": twin,
        "start": (first - 1) / fps,
        "end": (last - 1) / fps,
        "first_frame": first,
        "last_frame": last,
        "direction": "left to right" if walker.direction > 0 else "right to left",
    }


def generate_synthetic_video(
    out: Union[str, Path],
    *,
    seconds: float = 30.0,
    people: int = 12,
    fps: int = 10,
    size: Tuple[int, int] = (360, 640),
    seed: int = 0,
    captions: int = 3,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write a synthetic street video with MOT ground truth and captions to ``out``.

    Args:
        seconds: video length; people: pedestrians, each crossing the frame once, wholly
            inside the video; fps: frames per second; size: (height, width), even.
        captions: captions written per person; overwrite: replace an earlier synthetic video.
    Returns:
        the ``people.json`` content plus ``{"out", "video", "gt"}`` paths.
    """
    size = (int(size[0]), int(size[1]))
    _check(seconds, people, fps, size, captions)
    out = Path(out).absolute()
    if out.exists():
        _may_replace(out, overwrite)
    persons, twins = _identities(people, seed)
    walkers = plan_walkers(persons, seconds, size[0], size[1], np.random.default_rng([seed, 1]))
    count = max(1, int(round(seconds * fps)))
    with atomic_directory(out, lambda path: _may_replace(path, overwrite)) as tmp:
        renderer = SceneRenderer(walkers, size[0], size[1], np.random.default_rng([seed, 2]))
        rows = _write_frames(renderer, tmp / VIDEO_FILE, fps, count, progress)
        _write_truth(tmp, out.name, rows, fps, count, size)
        manifest = {
            "generator": GENERATOR,
            "version": 1,
            "seed": seed,
            "seconds": seconds,
            "fps": fps,
            "frames": count,
            "size": list(size),
            "twin_pairs": len(twins) // 2,
            "people": _people(walkers, rows, twins, seed, captions, fps),
        }
        (tmp / PEOPLE_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    log.debug("wrote %d frames with %d walkers to %s", count, len(manifest["people"]), out)
    return {**manifest, "out": str(out), "video": str(out / VIDEO_FILE), "gt": str(out / GT_FILE)}


def _identities(count: int, seed: int) -> tuple:
    """(persons in track order, {track: twin track}) drawn like ``ssan synth``'s identities."""
    groups = sample_identities(count, np.random.default_rng([seed, 0]), swap_fraction=TWIN_FRACTION)
    persons = [p for g in groups for p in g]
    twins, track = {}, 1
    for group in groups:
        if len(group) == 2:
            twins[track], twins[track + 1] = track + 1, track
        track += len(group)
    return persons, twins


def _write_truth(folder: Path, name: str, rows: dict, fps: int, count: int, size: Tuple[int, int]) -> None:
    (folder / "gt").mkdir()
    (folder / GT_FILE).write_text("\n".join(_gt_lines(rows)) + "\n", encoding="utf-8")
    (folder / "seqinfo.ini").write_text(
        f"[Sequence]\nname={name}\nimDir=img1\nframeRate={fps}\nseqLength={count}\n"
        f"imWidth={size[1]}\nimHeight={size[0]}\nimExt=.jpg\n",
        encoding="utf-8",
    )


def _people(walkers: list, rows: dict, twins: dict, seed: int, captions: int, fps: int) -> dict:
    """``people.json``'s ``people``: captions, attributes and ground-truth extent of each walker seen."""
    entries = {}
    for walker in walkers:
        rng = np.random.default_rng([seed, 3, walker.track])
        texts = [caption(walker.person, rng) for _ in range(captions)]
        if walker.track in rows:
            entries[str(walker.track)] = _people_entry(walker, texts, twins.get(walker.track), rows[walker.track], fps)
    return entries
