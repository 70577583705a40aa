"""The embedded synthetic pedestrian dataset (``ssan synth``).

Procedurally drawn pedestrians (see ``_synth_draw``) with captions from a grammar (see
``_synth_text``), written in the layout of one of the three real datasets:

- ``cuhk-pedes``: ``reid_raw.json`` (split, captions, file_path, processed_tokens, id), 1-based
  ids, images under ``imgs/CUHK01``, ``imgs/CUHK03`` and ``imgs/Market``; splits train/val/test;
- ``icfg-pedes``: ``ICFG-PEDES.json``, same fields, 0-based ids with contiguous train ids, one
  caption per image, MSMT17-style paths whose ``train/``/``test/`` folder is not the split;
  splits train/test only (the val fraction goes to test);
- ``rstpreid``: ``data_captions.json`` (id, img_path, captions, split), no processed_tokens,
  two captions per image with no space after most full stops, 5 images per id.

Identities are unique attribute combinations; about a quarter come in pairs that differ only
by exchanging upper and lower garment colours, and pairs stay in one split. A manifest,
``ssan-synth.json`` (parameters and counts), is written beside the annotation file, and so is
the ground truth, ``ssan-synth-truth.json``: every identity's attributes (and its colour-swapped
twin's id) and, per image, each caption's text with the facts it states (see
``_synth_text.caption_with_facts`` and ``synth_ceiling``). Everything derives
from ``seed`` (per-image generators), so the output is byte-identical for any ``workers``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from ssan.data._io import atomic_directory
from ssan.data._synth_draw import render_person
from ssan.data._synth_people import Person, sample_identities
from ssan.data._synth_text import FACT_FIELDS, caption_with_facts
from ssan.data.formats import DatasetFormat, dataset_format
from ssan.errors import DataError

log = logging.getLogger(__name__)

MANIFEST = "ssan-synth.json"
TRUTH = "ssan-synth-truth.json"


def _check_args(ids, images_per_id, captions, size, splits, workers) -> None:
    if ids < 1 or images_per_id < 1:
        raise DataError(f"ids and images_per_id must be >= 1 (got {ids}, {images_per_id})")
    if captions[0] < 1 or captions[1] < captions[0]:
        raise DataError(f"captions per image must be >= 1 and MIN <= MAX (got {captions[0]}-{captions[1]})")
    if size[0] < 16 or size[1] < 8:
        raise DataError(f"image size must be at least 16x8 (HxW), got {size[0]}x{size[1]}")
    if len(splits) != 3 or min(splits) < 0 or splits[0] <= 0 or sum(splits[1:]) <= 0:
        raise DataError(
            f"splits must be three fractions (train, val, test) with train > 0 and val+test > 0, got {tuple(splits)}"
        )
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")


def _assign_splits(
    groups: List[List[Person]], fractions: Sequence[float], names: Tuple[str, ...], rng: np.random.Generator
) -> Dict[str, List[int]]:
    """Person indices (generation order) per split.

    Colour-swapped pairs stay in one split (except when a tiny set must split one so that every
    split with a share gets an identity).
    """
    if len(names) == 2:
        fractions = (fractions[0], fractions[1] + fractions[2])
    total = sum(len(g) for g in groups)
    weights = np.asarray(fractions, dtype=float) / sum(fractions)
    targets = [int(np.floor(w * total)) for w in weights]
    for i in range(len(targets)):  # every split with a share gets at least one identity if possible
        if weights[i] > 0 and targets[i] == 0 and total >= len(names):
            targets[i] = 1
    targets[0] = total - sum(targets[1:])
    starts = np.cumsum([0] + [len(g) for g in groups])
    result: Dict[str, List[int]] = {name: [] for name in names}
    for g in rng.permutation(len(groups)):  # test, then val, take whole groups while they fit
        members = list(range(starts[g], starts[g + 1]))
        split = next((i for i in range(len(names) - 1, 0, -1) if len(result[names[i]]) + len(members) <= targets[i]), 0)
        result[names[split]].extend(members)
    for i in range(1, len(names)):  # tiny sets: a split left empty takes one training identity
        if targets[i] > 0 and not result[names[i]] and len(result[names[0]]) > 1:
            result[names[i]].append(result[names[0]].pop())
    return {name: sorted(idx) for name, idx in result.items()}


def _identity(task: tuple) -> Tuple[List[dict], List[dict]]:
    """Draw and save the images of one identity; returns its annotation records and their truth
    entries (the captions' facts), in image order."""
    fmt, person, index, raw_id, split, paths, size, seed, captions, imgs = task
    records, truths, made = [], [], set()
    for k, path in enumerate(paths):
        rng = np.random.default_rng([seed, 2, index, k])
        texts = [
            caption_with_facts(person, rng, tight=fmt.tight_captions > 0 and rng.random() < fmt.tight_captions)
            for _ in range(int(rng.integers(captions[0], captions[1] + 1)))
        ]
        records.append(fmt.record(split, raw_id, path, [text for text, _ in texts]))
        truths.append({"image": path, "id": raw_id, "captions": [{"text": t, **stated} for t, stated in texts]})
        image = render_person(person, size, np.random.default_rng([seed, 1, index, k]))
        target = Path(imgs) / path
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        if target.suffix == ".png":
            image.save(target, compress_level=1)
        else:
            image.save(target, quality=92)
    return records, truths


def _run_all(tasks: List[tuple], workers: int) -> Tuple[List[dict], List[dict]]:
    """Run :func:`_identity` over ``tasks`` (in processes when ``workers`` > 1): records and truth
    entries in task order."""
    total = sum(len(t[5]) for t in tasks)
    bar = tqdm(total=total, desc="drawing images", unit="img", file=sys.stderr, disable=None, leave=False)
    records: List[dict] = []
    truths: List[dict] = []
    if workers == 1:
        results = map(_identity, tasks)
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(_identity, tasks, chunksize=max(1, len(tasks) // (workers * 16)))
    try:
        for done, truth in results:
            records.extend(done)
            truths.extend(truth)
            bar.update(len(done))
    finally:
        bar.close()
        if workers > 1:
            pool.shutdown(cancel_futures=True)
    return records, truths


def _truth(fmt: str, seed: int, tasks: List[tuple], groups: List[List[Person]], images: List[dict]) -> dict:
    """The content of :data:`TRUTH`: each identity's attributes and twin, each image's caption facts."""
    raw_of = {task[2]: task[3] for task in tasks}
    twin: Dict[int, int] = {}
    start = 0
    for group in groups:
        if len(group) == 2:
            twin[start], twin[start + 1] = start + 1, start
        start += len(group)
    identities = [
        {"id": task[3], "split": task[4], "twin": raw_of.get(twin.get(task[2])), "attributes": asdict(task[1])}
        for task in tasks
    ]
    return {
        "generator": "ssan-synth",
        "version": 1,
        "format": fmt,
        "seed": seed,
        "fact_fields": list(FACT_FIELDS),
        "identities": identities,
        "images": images,
    }


def _may_replace(out: Path, overwrite: bool) -> bool:
    if not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory")
    if not any(out.iterdir()):
        return True
    if not (out / MANIFEST).is_file():
        raise DataError(f"output {out} is not empty and is not a synthetic dataset; refusing to replace it")
    if not overwrite:
        raise DataError(f"output {out} already holds a synthetic dataset; use --overwrite to replace it")
    return True


def _captions_range(value: Union[int, Sequence[int], None], fmt: DatasetFormat) -> Tuple[int, int]:
    if value is None:
        return tuple(fmt.captions)
    if isinstance(value, int):
        return value, value
    low, high = value
    return int(low), int(high)


def generate_synthetic(
    out: Union[str, Path],
    *,
    ids: int = 500,
    images_per_id: Optional[int] = None,
    captions_per_image: Union[int, Tuple[int, int], None] = None,
    size: Tuple[int, int] = (128, 64),
    seed: int = 0,
    fmt: str = "cuhk-pedes",
    splits: Sequence[float] = (0.8, 0.1, 0.1),
    workers: int = 1,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic dataset in ``fmt``'s layout to ``out``; returns its manifest.

    Args:
        out: dataset root to create (annotation file + ``imgs/``), written atomically.
        fmt: a registered dataset format (:mod:`ssan.data.formats`), which says how its files,
            records and splits look.
        ids: number of identities; images_per_id: images each (format default 4, RSTPReid 5).
        captions_per_image: an int or an inclusive (min, max) range (format default: CUHK-PEDES
            1-3, ICFG-PEDES 1, RSTPReid 2).
        size: image (height, width) in pixels; seed: everything derives from it.
        splits: identity fractions (train, val, test); workers: drawing processes.
        overwrite: replace an existing synthetic dataset at ``out`` (never another folder).
    """
    spec = dataset_format(fmt)
    images_per_id = images_per_id or spec.images_per_id
    captions = _captions_range(captions_per_image, spec)
    size = (int(size[0]), int(size[1]))
    _check_args(ids, images_per_id, captions, size, tuple(splits), workers)
    groups = sample_identities(ids, np.random.default_rng([seed, 0]))
    assignment = _assign_splits(groups, splits, spec.synth_splits, np.random.default_rng([seed, 3]))
    out = Path(out).absolute()
    if out.exists():
        _may_replace(out, overwrite)
    tasks = _tasks(spec, groups, assignment, images_per_id, size, seed, captions)
    with atomic_directory(out, lambda path: _may_replace(path, overwrite)) as tmp:
        records, truths = _run_all([t[:-1] + (str(tmp / "imgs"),) for t in tasks], workers)
        (tmp / spec.files[0]).write_text(json.dumps(records), encoding="utf-8")
        truth = _truth(fmt, seed, tasks, groups, truths)
        (tmp / TRUTH).write_text(json.dumps(truth, separators=(",", ":")), encoding="utf-8")
        settings = {
            "format": fmt,
            "seed": seed,
            "ids": ids,
            "images_per_id": images_per_id,
            "captions": captions,
            "size": size,
        }
        manifest = _manifest(settings, spec, groups, assignment, records)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.debug("wrote %d images of %d identities to %s", len(records), ids, out)
    return {**manifest, "out": str(out), "annotation": str(out / spec.files[0])}


def _tasks(spec, groups, assignment, images_per_id, size, seed, captions) -> List[tuple]:
    """One drawing task per identity, in split order (raw ids counted from the format's base)."""
    people = [p for g in groups for p in g]
    tasks, raw_id = [], spec.id_base
    for split in spec.synth_splits:
        for index in assignment[split]:
            paths = spec.image_paths(raw_id, images_per_id, np.random.default_rng([seed, 4, index]))
            tasks.append((spec, people[index], index, raw_id, split, paths, size, seed, captions, None))
            raw_id += 1
    return tasks


def _manifest(settings: dict, spec, groups, assignment, records: List[dict]) -> dict:
    """The content of :data:`MANIFEST`: the generator's parameters and the counts per split."""
    counts = {
        split: {
            "images": sum(r["split"] == split for r in records),
            "captions": sum(len(r["captions"]) for r in records if r["split"] == split),
            "identities": len(assignment[split]),
        }
        for split in spec.synth_splits
    }
    return {
        "generator": "ssan-synth",
        "version": 1,
        "format": settings["format"],
        "seed": settings["seed"],
        "ids": settings["ids"],
        "images_per_id": settings["images_per_id"],
        "captions_per_image": list(settings["captions"]),
        "size": list(settings["size"]),
        "swap_pairs": sum(len(g) == 2 for g in groups),
        "images": len(records),
        "captions": sum(c["captions"] for c in counts.values()),
        "identities": settings["ids"],
        "splits": counts,
        "truth": TRUTH,
    }
