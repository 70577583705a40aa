"""``ssan prepare``: validate a dataset, build the vocabulary and write the prepared directory.

Rules (SSAN reference pipeline, see docs/method.md section 1):
- vocabulary from the **train** split only, words seen at least ``min_count`` times, id 0 padding;
  unknown words are dropped (``drop_unknown=False`` maps them to ``<unk>``, id 1, instead);
- captions truncated to ``max_length`` tokens; a caption left with no token is skipped and
  counted in ``empty_captions``; an image left with no caption is listed in ``skipped``;
- train identities with fewer than two images are dropped (``dropped_train_ids``, raw ids); the
  others get contiguous labels 0..N-1 in increasing raw-id order; val/test keep raw ids only.

Every record and every image is checked (in a thread pool) before anything is written. Without
``skip_invalid`` any problem raises one DataError listing them (one line each, at most 20); with
it the bad records are dropped and listed in ``skipped``. The output is written to a temporary
directory next to ``out`` and renamed into place, so an interrupted run leaves nothing behind,
and it is byte-identical when re-run on the same input. Default ``out``: ``ROOT/ssan-prepared``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from tqdm import tqdm

from ssan.data._io import atomic_directory, dumps
from ssan.data.annotations import Annotations, Problem, Record, check_dataset_name, find_annotation, read_annotations
from ssan.data.images import MAX_PIXELS, ImageError, check_image
from ssan.data.vocab import Vocabulary
from ssan.errors import DataError

log = logging.getLogger(__name__)

DEFAULT_OUT = "ssan-prepared"
MAX_PROBLEM_LINES = 20
SPLITS = ("train", "val", "test")


def default_workers() -> int:
    """Image-checking threads: decoding small images is mostly CPU-bound, so a few per core."""
    return min(8, 2 * (os.cpu_count() or 1))


def check_images(
    records: Sequence[Record], image_root: Path, workers: Optional[int] = None, max_pixels: int = MAX_PIXELS
) -> List[Problem]:
    """Check every record's image file in a thread pool; returns the problems in record order."""

    def check(record: Record) -> Optional[Problem]:
        try:
            check_image(image_root / record.image, max_pixels)
        except ImageError as exc:
            return Problem(record.index, record.image, exc.reason, kind="image")
        return None

    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        results = pool.map(check, records)
        found = tqdm(
            results, total=len(records), desc="checking images", unit="img", file=sys.stderr, disable=None, leave=False
        )
        return [p for p in found if p is not None]


def format_problems(annotations: Annotations, problems: Sequence[Problem], limit: int = MAX_PROBLEM_LINES) -> str:
    """Multi-line message: a header, one line per problem (at most ``limit``), then a count."""
    name = annotations.annotation.name
    try:
        image_dir = annotations.image_root.relative_to(annotations.annotation.parent).as_posix()
    except ValueError:
        image_dir = str(annotations.image_root)
    lines = [
        f"{len(problems)} problem(s) in {annotations.annotation} (nothing written; "
        f"--skip-invalid drops the bad records):"
    ]
    for p in sorted(problems, key=lambda p: p.index)[:limit]:
        image = f"image {(Path(image_dir) / p.file).as_posix()}: " if p.kind == "image" else ""
        lines.append(f"  {name} record {p.index}: {image}{p.reason}")
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def _may_replace(out: Path, dataset: str, annotation: Path, overwrite: bool) -> bool:
    """True when ``out`` may be replaced; raises DataError when it must not be."""
    if not out.is_dir():
        raise DataError(f"output {out} exists and is not a directory")
    if not any(out.iterdir()):
        return True
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict) or summary.get("format") != "ssan-prepared":
        raise DataError(
            f"output {out} is not empty and holds no prepared dataset; refusing to replace it "
            "(choose another --out or remove it)"
        )
    if overwrite or (summary.get("dataset") == dataset and summary.get("annotation") == str(annotation)):
        return True
    raise DataError(
        f"output {out} holds another prepared dataset ({summary.get('dataset')} from "
        f"{summary.get('annotation')}); use --overwrite to replace it"
    )


def prepare_dataset(
    dataset: str,
    root: Union[str, Path],
    out: Optional[Union[str, Path]] = None,
    *,
    min_count: int = 2,
    max_length: int = 100,
    drop_unknown: bool = True,
    skip_invalid: bool = False,
    overwrite: bool = False,
    workers: Optional[int] = None,
    max_pixels: int = MAX_PIXELS,
    retokenize: bool = False,
    force: Optional[bool] = None,
) -> dict:
    """Validate ``dataset`` under ``root`` and write the prepared directory ``out``.

    ``retokenize`` re-tokenises the dataset's ``processed_tokens`` (default: used as given,
    lower-cased, as the reference does; see :mod:`ssan.data.formats`). ``overwrite`` replaces an
    output holding another prepared dataset (``force``, its former name, still works, deprecated).

    Returns the summary (the content of ``summary.json``). Raises DataError on bad input.
    """
    if force is not None:
        warnings.warn("prepare_dataset(force=) is deprecated: use overwrite=", DeprecationWarning, stacklevel=2)
        overwrite = overwrite or force
    check_dataset_name(dataset)
    if min_count < 1 or max_length < 1:
        raise DataError(f"min_count and max_length must be >= 1 (got {min_count}, {max_length})")
    root = Path(root).absolute()
    out = Path(out).absolute() if out is not None else root / DEFAULT_OUT
    annotation = find_annotation(dataset, root).absolute()
    if out.exists():
        _may_replace(out, dataset, annotation, overwrite)
    annotations = read_annotations(dataset, root, retokenize=retokenize)
    problems = annotations.problems + check_images(annotations.records, annotations.image_root, workers, max_pixels)
    if problems and not skip_invalid:
        raise DataError(format_problems(annotations, problems))
    bad = {p.index for p in problems}
    records = [r for r in annotations.records if r.index not in bad]
    built = _build(records, min_count, max_length, drop_unknown)
    summary = _summary(dataset, annotations, built, problems, min_count, max_length, drop_unknown)
    summary["tokens"] = _token_report(annotations, built["stats"], retokenize)
    with atomic_directory(out, lambda path: _may_replace(path, dataset, annotation, overwrite)) as tmp:
        _write(tmp, summary, built)
    log.debug("prepared %s in %s", dataset, out)
    return summary


def _encode(records: List[Record], vocab: Vocabulary, max_length: int, stats: Counter) -> Dict[str, list]:
    entries: Dict[str, list] = {split: [] for split in SPLITS}
    for record in records:
        captions, tokens, kept_words = [], [], []
        for caption, words in zip(record.captions, record.tokens):
            ids, unknown = vocab.encode_tokens(words)
            stats["unknown_tokens"] += len(unknown)
            stats[f"unknown_tokens/{record.split}"] += len(unknown)
            stats[f"tokens/{record.split}"] += len(words)
            if not ids:
                stats["empty_captions"] += 1
                continue
            stats["truncated_captions"] += len(ids) > max_length
            captions.append(caption)
            tokens.append(ids[:max_length])
            kept_words.append(list(words))
        if captions:
            entries[record.split].append(
                {"record": record, "captions": captions, "tokens": tokens, "words": kept_words}
            )
        else:
            stats.setdefault("no_caption", []).append(
                Problem(record.index, record.image, "no caption has a known word")
            )
    return entries


def _build(records: List[Record], min_count: int, max_length: int, drop_unknown: bool) -> dict:
    train = [r for r in records if r.split == "train"]
    vocab = Vocabulary.build((t for r in train for t in r.tokens), min_count, unknown=not drop_unknown)
    stats: Counter = Counter()
    entries = _encode(records, vocab, max_length, stats)
    counts = Counter(e["record"].id for e in entries["train"])
    dropped = sorted(i for i, c in counts.items() if c < 2)
    labels = {raw: label for label, raw in enumerate(sorted(i for i, c in counts.items() if c >= 2))}
    if not labels:
        raise DataError("no training identity with at least two usable images: nothing to train on")
    entries["train"] = [e for e in entries["train"] if e["record"].id in labels]
    for split, rows in entries.items():
        for e in rows:
            e["label"] = labels[e["record"].id] if split == "train" else None
    if not entries["test"]:
        log.warning("no test records: the prepared dataset cannot be evaluated")
    return {"vocab": vocab, "entries": entries, "labels": labels, "dropped": dropped, "stats": stats}


def _split_counts(rows: list) -> dict:
    return {
        "images": len(rows),
        "captions": sum(len(e["captions"]) for e in rows),
        "identities": len({e["record"].id for e in rows}),
    }


def _summary(
    dataset: str,
    annotations: Annotations,
    built: dict,
    problems: List[Problem],
    min_count: int,
    max_length: int,
    drop_unknown: bool,
) -> dict:
    stats = built["stats"]
    skipped = sorted(problems + stats.get("no_caption", []), key=lambda p: p.index)
    return {
        "format": "ssan-prepared",
        "version": 1,
        "dataset": dataset,
        "image_root": str(annotations.image_root),
        "annotation": str(annotations.annotation),
        "min_count": min_count,
        "max_length": max_length,
        "drop_unknown": drop_unknown,
        "vocab_size": len(built["vocab"]),
        "num_classes": len(built["labels"]),
        "splits": {s: _split_counts(rows) for s, rows in built["entries"].items() if rows},
        "dropped_train_ids": built["dropped"],
        "skipped": [p.to_dict() for p in skipped],
        "empty_captions": stats["empty_captions"],
        "truncated_captions": stats["truncated_captions"],
        "unknown_tokens": stats["unknown_tokens"],
        "retokenized_records": annotations.retokenized,
    }


def _token_report(annotations: Annotations, stats: Counter, retokenize: bool) -> dict:
    """What differs from the dataset's own tokens and from the reference's vocabulary, in counts.

    ``lowercased``: given tokens changed by lower-casing (the reference would drop them as
    unknown); ``retokenized``: given tokens changed by ``--retokenize`` (0 without it);
    ``blank``: empty given tokens ignored; ``unknown_dropped`` / ``tokens``: per split, words
    dropped as unknown to the train vocabulary / words in all.
    """
    changes = annotations.token_changes
    return {
        "source": "retokenized" if retokenize else "as given, lower-cased",
        "lowercased": changes["lowercased"],
        "retokenized": changes["retokenized"],
        "blank": changes["blank"],
        "captions_tokenized": annotations.retokenized,
        "tokens": {split: stats[f"tokens/{split}"] for split in SPLITS if stats[f"tokens/{split}"]},
        "unknown_dropped": {split: stats[f"unknown_tokens/{split}"] for split in SPLITS if stats[f"tokens/{split}"]},
    }


def _write(directory: Path, summary: dict, built: dict) -> None:
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    built["vocab"].save(directory / "vocab.json")
    for split, rows in built["entries"].items():
        if not rows:
            continue
        with open(directory / f"{split}.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for e in rows:
                line = {
                    "image": e["record"].image,
                    "id": e["record"].id,
                    "label": e["label"],
                    "captions": e["captions"],
                    "tokens": e["tokens"],
                    "words": e["words"],
                }
                handle.write(dumps(line) + "\n")
