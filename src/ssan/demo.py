"""``ssan demo``: the whole job on the embedded synthetic pedestrian set.

Generate the set (unless present), prepare it, train with the ``synth`` preset, evaluate
on the test split, and write under the output folder::

    synth/                 the generated dataset (CUHK-PEDES layout)
    prepared/              its prepared form
    run/                   the training run (checkpoints, metrics.jsonl, config.yaml, results.json)
    metrics.json           final test figures per term (global, parts, relation, sum), the
                           reference's protocol figure and the captions' ceiling
    retrieval.png          8 test queries with their top-10 images (green: match, red: not)
    training_curves.png    loss terms and validation figures per epoch

Each stage resumes: an interrupted demo picks up where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ssan._extras import available
from ssan._files import atomic_write_text

log = logging.getLogger(__name__)

DEMO_FORMAT = "cuhk-pedes"  # the layout the demo's synthetic set is written in
DEMO_IDS = 1100  # 10% test identities x 5 images = 550 test gallery images
DEMO_IMAGES_PER_ID = 5
DEMO_SIZE = (64, 32)
SHEET_QUERIES = 8


def run_demo(
    output: Union[str, os.PathLike] = "ssan-demo",
    *,
    ids: int = DEMO_IDS,
    images_per_id: int = DEMO_IMAGES_PER_ID,
    seed: int = 0,
    overrides: Sequence[str] = (),
    device: Optional[str] = None,
) -> dict:
    """Run the demo; returns ``{"metrics": ..., "timings": ..., "paths": ...}``."""
    from ssan.config import load_config
    from ssan.data import dataset_format, generate_synthetic, prepare_dataset
    from ssan.engine.trainer import Trainer

    out = Path(output)
    draw = _can_draw()
    if not draw:
        log.warning("matplotlib is not installed: the demo will skip its pictures (pip install 'ssan[viz]')")
    timings: dict = {}
    started = time.perf_counter()
    synth_dir, prepared_dir, run_dir = out / "synth", out / "prepared", out / "run"
    annotation = dataset_format(DEMO_FORMAT).files[0]
    if (synth_dir / annotation).exists():
        _check_existing_set(
            synth_dir,
            {"format": DEMO_FORMAT, "seed": seed, "ids": ids, "images_per_id": images_per_id, "size": list(DEMO_SIZE)},
        )
    else:
        log.info("generating the synthetic set: %d identities x %d images", ids, images_per_id)
        generate_synthetic(
            synth_dir,
            ids=ids,
            images_per_id=images_per_id,
            size=DEMO_SIZE,
            seed=seed,
            workers=min(2, os.cpu_count() or 1),
        )
    timings["generate_s"] = time.perf_counter() - started
    if not (prepared_dir / "summary.json").exists():
        log.info("preparing it")
        prepare_dataset(DEMO_FORMAT, synth_dir, prepared_dir)
    timings["prepare_s"] = time.perf_counter() - started - timings["generate_s"]

    config = load_config("synth", [f"train.seed={seed}", *overrides])
    resume = (run_dir / "checkpoints" / "last.pt").exists()
    log.info("training (%s)", "resuming" if resume else "synth preset")
    trainer = Trainer.from_config(config, prepared_dir, run_dir, device=device, resume=resume, overwrite=not resume)
    results = trainer.fit()
    timings["train_and_evaluate_s"] = time.perf_counter() - started - timings["generate_s"] - timings["prepare_s"]

    metrics = demo_metrics(results["test_last"])
    metrics["model"] = f"last epoch ({results['epochs']})"
    metrics["reference_protocol"] = results.get("reference_protocol")
    metrics["ceiling"] = demo_ceiling(synth_dir, trainer.prepared)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    paths = {"metrics": out / "metrics.json", "run": run_dir}
    if draw:
        paths.update(_pictures(trainer, out, metrics["ceiling"]))
    timings["total_s"] = time.perf_counter() - started
    return {"metrics": metrics, "results": results, "timings": timings, "paths": paths}


def demo_ceiling(synth_dir: Path, prepared, split: str = "test") -> Optional[dict]:
    """The best figures the test captions allow (:func:`ssan.data.synth_ceiling.caption_ceiling`).

    None, with a warning, for a set generated before the generator wrote its ground truth.
    """
    from ssan.data.synth_ceiling import caption_ceiling
    from ssan.errors import DataError

    try:
        figures = caption_ceiling(synth_dir, prepared, split)
    except DataError as exc:
        log.warning("no ceiling: %s", exc)
        return None
    return {name: figures[name] for name in ("R1", "R5", "R10", "mAP")}


def _can_draw() -> bool:
    return available("matplotlib")  # the viz extra


def _check_existing_set(synth_dir: Path, wanted: dict) -> None:
    """Refuse to resume on a synthetic set made with other settings (it would be silently reused)."""
    from ssan.data._io import read_json
    from ssan.data.synth import MANIFEST
    from ssan.errors import DataError

    made = read_json(synth_dir / MANIFEST) if (synth_dir / MANIFEST).is_file() else None
    if not isinstance(made, dict):
        raise DataError(
            f"{synth_dir} holds an annotation file but no {MANIFEST}: it is not a set "
            "the demo made; use another --output or remove that folder"
        )
    for key, value in wanted.items():
        if made.get(key) != value:
            raise DataError(
                f"{synth_dir} was generated with {key}={made.get(key)!r}, not {value!r}: "
                "use another --output or remove that folder"
            )


def demo_metrics(test: dict) -> dict:
    """``metrics.json``: one object per term with R1/R5/R10/mAP/mINP, plus the counts."""
    metrics = {term: dict(values) for term, values in test["t2i"].items()}
    metrics["num_queries"] = test["num_queries"]
    metrics["num_gallery"] = test["num_gallery"]
    return metrics


def _pictures(trainer, out: Path, ceiling: Optional[dict]) -> dict:
    """The retrieval sheet (first test queries of distinct identities) and the training curves."""
    from ssan.viz import retrieval_sheet, training_curves

    paths = {"curves": training_curves(trainer.history, out / "training_curves.png", ceiling=ceiling)}
    sheet = retrieval_rows(trainer.model, trainer.prepared, trainer.config, trainer.device)
    paths["sheet"] = retrieval_sheet(sheet, out / "retrieval.png", top_k=10)
    return paths


def retrieval_rows(model, prepared, config, device, split: str = "test", count: int = SHEET_QUERIES) -> list:
    """Top-10 results of ``count`` test queries, one per identity, in the viz module's format."""
    from ssan.data import build_transforms
    from ssan.evaluation import encode_gallery, encode_queries
    from ssan.models import similarity

    records = prepared.records(split)
    transform = build_transforms(config.data.height, config.data.width, train=False)
    gallery = encode_gallery(model, records, prepared.image_root, transform, device, progress=False)
    queries = encode_queries(model, records, device, max_length=config.data.max_length, progress=False)
    chosen, seen = [], set()
    for q, identity in enumerate(queries["ids"].tolist()):
        if identity not in seen:
            seen.add(identity)
            chosen.append(q)
        if len(chosen) == count:
            break
    picked = {term: feats[chosen] for term, feats in queries["feats"].items()}
    scores = similarity(gallery["feats"], picked)
    top = torch.topk(scores, k=min(10, scores.shape[1]), dim=1)
    rows = []
    for row, q in enumerate(chosen):
        record_index, caption_index = _caption_of(records, int(queries["image_index"][q]), q, queries)
        results = [
            (prepared.image_root / records[g]["image"], records[g]["id"] == records[record_index]["id"], float(s))
            for s, g in zip(top.values[row].tolist(), top.indices[row].tolist())
        ]
        rows.append({"caption": records[record_index]["captions"][caption_index], "results": results})
    return rows


def _caption_of(records: list, record_index: int, query: int, queries: dict) -> tuple:
    """(record, caption) of query ``query``: queries enumerate captions in record order."""
    first = int((queries["image_index"] == record_index).nonzero()[0])
    return record_index, query - first
