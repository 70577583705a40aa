"""Retrieval evaluation: encode a prepared split once, score it in row chunks, report metrics.

The protocol of ``docs/datasets-and-metrics.md`` section 2: every caption of the split queries
every image of the split (text -> image); an image matches when its identity equals the
caption's. Optionally every image queries every caption (image -> text). Metrics are reported
for each feature term alone (``global``, ``parts``, ``relation``: one cosine each) and for
their sum (the SSAN score).

In a notebook::

    from ssan.evaluation import evaluate_checkpoint, format_metrics_table
    results = evaluate_checkpoint("runs/cuhk/checkpoints/best.pt", "prepared/cuhk")
    print(format_metrics_table(results))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from ssan.data.transforms import normalize_images
from ssan.devices import Device, resolve_device
from ssan.errors import DataError
from ssan.evaluation.metrics import DEFAULT_KS, RankMetricAccumulator
from ssan.models.similarity import feature_terms, flatten_features

log = logging.getLogger(__name__)



def _features(outputs: dict, keep_on_device: bool) -> Dict[str, torch.Tensor]:
    feats = {term: outputs[term].float() for term in feature_terms(outputs)}
    return feats if keep_on_device else {term: value.cpu() for term, value in feats.items()}


def encode_loader(model: nn.Module, loader, desc: str, progress: bool, step, keep_on_device: bool = False) -> dict:
    """Run ``step(model, batch) -> feature dict`` over ``loader`` in eval mode without gradients.

    Returns ``{"feats": {term: N x ...}, "ids": (N,), "index": (N,), ["image_index": (N,)]}``; the
    features stay on the model's device with ``keep_on_device`` (else CPU float tensors).
    """
    was_training = model.training
    model.eval()
    feats: Dict[str, list] = {}
    extras: Dict[str, list] = {}
    try:
        with torch.inference_mode():
            for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
                for term, value in _features(step(model, batch), keep_on_device).items():
                    feats.setdefault(term, []).append(value)
                for key in ("id", "index", "image_index"):
                    if key in batch:
                        extras.setdefault(key, []).append(batch[key])
    finally:
        model.train(was_training)
    if not feats:
        raise DataError(f"nothing to encode: the {desc} loader is empty")
    result = {"feats": {term: torch.cat(values) for term, values in feats.items()}}
    result.update({key: torch.cat(values) for key, values in extras.items()})
    result["ids"] = result.pop("id")
    return result


def gallery_step(device: torch.device, channels_last: bool = False):
    """``step(model, batch)`` encoding a gallery batch (uint8 or float images) on ``device``."""

    def step(model, batch):
        images = normalize_images(batch["image"].to(device, non_blocking=True))
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return model.encode_image(images)

    return step


def query_step(device: torch.device):
    """``step(model, batch)`` encoding a batch of captions on ``device`` (lengths stay on the CPU)."""

    def step(model, batch):
        return model.encode_text(batch["tokens"].to(device, non_blocking=True), batch["lengths"])

    return step


def encode_gallery(model: nn.Module, records: Sequence[dict], image_root: Union[str, Path], transform,
                   device: Device = None, batch_size: int = 128, num_workers: int = 0, progress: bool = True,
                   keep_on_device: bool = False) -> dict:
    """Encode every image of ``records`` once.

    Args:
        model: an SSAN model (``encode_image(images) -> {term: B x ...}``), on ``device``.
        records: prepared records (one per image).
        image_root: folder the records' ``image`` paths are relative to.
        transform: evaluation transform, PIL image -> 3 x H x W, ``uint8`` pixels (normalised on the
            device) or normalised floats (see ``ssan.data.build_transforms``).

    Returns:
        ``{"feats": {term: N x ... float tensors (CPU unless keep_on_device)}, "ids": (N,), "index": (N,)}``.
    """
    from ssan.data import GalleryDataset, make_loader

    device = resolve_device(device)
    loader = make_loader(GalleryDataset(records, image_root, transform), batch_size, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    return encode_loader(model, loader, "gallery", progress, gallery_step(device), keep_on_device)


def encode_queries(model: nn.Module, records: Sequence[dict], device: Device = None, batch_size: int = 128,
                   num_workers: int = 0, max_length: int = 100, progress: bool = True,
                   keep_on_device: bool = False) -> dict:
    """Encode every caption of ``records`` once (one query per caption, in record order).

    Returns:
        ``{"feats": {term: Q x ...}, "ids": (Q,), "index": (Q,), "image_index": (Q,) record of each caption}``.
    """
    from ssan.data import QueryDataset, make_loader

    device = resolve_device(device)
    loader = make_loader(QueryDataset(records, max_length), batch_size, num_workers=num_workers)
    return encode_loader(model, loader, "queries", progress, query_step(device), keep_on_device)


def similarity_rows(num_columns: int, memory_budget_mb: float, itemsize: int = 4) -> int:
    """Rows of a similarity chunk with ``num_columns`` columns that fit ``memory_budget_mb``."""
    if memory_budget_mb <= 0:
        raise ValueError(f"memory_budget_mb must be positive, got {memory_budget_mb}")
    return max(1, int(memory_budget_mb * 2**20) // max(1, num_columns * itemsize))


def _direction_metrics(queries: torch.Tensor, gallery: torch.Tensor, query_ids: torch.Tensor,
                       gallery_ids: torch.Tensor, rows: int, ks: Sequence[int]) -> Dict[str, float]:
    """Metrics of ``queries @ gallery.T`` computed ``rows`` query rows at a time."""
    accumulator = RankMetricAccumulator(ks)
    for start in range(0, len(queries), rows):
        scores = queries[start:start + rows] @ gallery.T
        accumulator.process(scores, query_ids[start:start + rows], gallery_ids)
    return accumulator.evaluate()


def _resolve_terms(image_feats: dict, text_feats: dict, terms: Optional[Sequence[str]]) -> list:
    image_terms, text_terms = feature_terms(image_feats), feature_terms(text_feats)
    if image_terms != text_terms:
        raise ValueError(f"image terms {image_terms} differ from text terms {text_terms}")
    chosen = image_terms if terms is None else list(terms)
    missing = [term for term in chosen if term not in image_terms]
    if missing or not chosen:
        raise ValueError(f"unknown or absent terms {missing or chosen}; present: {', '.join(image_terms)}")
    return chosen


def evaluate_features(image_feats: dict, text_feats: dict, query_ids, gallery_ids,
                      terms: Optional[Sequence[str]] = None, i2t: bool = False, memory_budget_mb: float = 512,
                      ks: Sequence[int] = DEFAULT_KS, device: Device = None) -> dict:
    """Rank metrics per feature term and for their sum, from encoded features.

    Args:
        image_feats: ``{term: G x ...}`` gallery features (``encode_image`` outputs).
        text_feats: ``{term: Q x ...}`` query features (``encode_text`` outputs).
        query_ids: (Q,) identities of the captions; gallery_ids: (G,) identities of the images.
        terms: feature terms to report (None: every present term); ``"sum"`` is always added.
        i2t: also report image -> text (each image queries all captions).
        memory_budget_mb: the similarity is computed in chunks of rows of at most this size;
            the full Q x G matrix is never held when it is larger.
        device: where to compute (None: the device of the features).

    Returns:
        ``{"t2i": {"global": {"R1", "R5", "R10", "mAP", "mINP"}, ..., "sum": {...}},
        "i2t": {...} (with ``i2t``), "num_queries": Q, "num_gallery": G}``.
    """
    chosen = _resolve_terms(image_feats, text_feats, terms)
    all_terms = feature_terms(image_feats)
    target = torch.device(device) if device is not None else image_feats[chosen[0]].device
    image_feats = {term: image_feats[term].to(target) for term in all_terms}
    text_feats = {term: text_feats[term].to(target) for term in all_terms}
    query_ids = torch.as_tensor(query_ids).long()
    gallery_ids = torch.as_tensor(gallery_ids).long()
    directions = {"t2i": {}, "i2t": {}} if i2t else {"t2i": {}}
    groups = [(term, [term]) for term in chosen] + [("sum", all_terms)]
    for name, group in groups:
        if name == "sum" and len(all_terms) == 1 and all_terms[0] in chosen:
            for results in directions.values():
                results["sum"] = dict(results[all_terms[0]])  # one term: the sum is that term
            continue
        text, image = flatten_features(text_feats, group), flatten_features(image_feats, group)
        directions["t2i"][name] = _direction_metrics(
            text, image, query_ids, gallery_ids, similarity_rows(len(image), memory_budget_mb), ks)
        if i2t:
            directions["i2t"][name] = _direction_metrics(
                image, text, gallery_ids, query_ids, similarity_rows(len(text), memory_budget_mb), ks)
    return {**directions, "num_queries": len(query_ids), "num_gallery": len(gallery_ids)}


def _check_split(prepared, split: str) -> None:
    if split not in prepared.splits:
        raise DataError(f"split {split!r} is not in {prepared.directory}; "
                        f"available splits: {', '.join(prepared.splits) or 'none'}")


def evaluate(model: nn.Module, prepared, split: str = "test", device: Device = None, batch_size: int = 128,
             num_workers: int = 0, i2t: bool = False, height: int = 384, width: int = 128,
             max_length: Optional[int] = None, memory_budget_mb: float = 512, ks: Sequence[int] = DEFAULT_KS,
             progress: bool = True, vocab=None) -> dict:
    """Evaluate ``model`` on one split of a prepared dataset, once (see :class:`RetrievalEvaluator`).

    Args:
        model: an SSAN model; moved to ``device`` and put in eval mode for the duration (its
            train/eval mode is restored afterwards).
        prepared: a :class:`ssan.data.PreparedDataset`.
        split: ``test``, ``val``... (one of ``prepared.splits``).
        height, width: the evaluation image size (the model's training size).
        max_length: captions are truncated to this many tokens (None: the prepared value).
        vocab: the model's :class:`ssan.data.Vocabulary` (None: the prepared one). When it
            differs (cross-domain evaluation), the captions' words are re-encoded with it,
            unknown words dropped (see :func:`ssan.data.prepared.reencode_records`).

    Returns:
        The :func:`evaluate_features` dict plus ``"split"`` and ``"dataset"``, and
        ``"vocabulary"`` (what re-encoding the queries did) when ``vocab`` differs.
    """
    from ssan.evaluation.evaluator import RetrievalEvaluator

    evaluator = RetrievalEvaluator(
        prepared, split, height=height, width=width, max_length=max_length, batch_size=batch_size,
        num_workers=num_workers, vocab=vocab, i2t=i2t, memory_budget_mb=memory_budget_mb, ks=ks,
        progress=progress, persistent=False)
    return evaluator(model, resolve_device(device))


def evaluate_checkpoint(checkpoint_path: Union[str, Path], data_dir: Union[str, Path], split: str = "test",
                        device: Device = None, i2t: bool = False, batch_size: Optional[int] = None,
                        num_workers: int = 0, memory_budget_mb: float = 512, progress: bool = True) -> dict:
    """Load a checkpoint and evaluate it on a prepared dataset, in one call.

    The image size, caption length and evaluation batch size come from the checkpoint's config.
    The queries are encoded with the checkpoint's own vocabulary: a dataset prepared with
    another one (cross-domain: train on CUHK-PEDES, test on ICFG-PEDES) is re-encoded, its
    unknown words dropped and counted in ``results["vocabulary"]``.

    Returns:
        The :func:`evaluate` dict plus ``"checkpoint"`` (path) and ``"epoch"``.
    """
    from ssan.data import load_prepared
    from ssan.engine.checkpoint import load_model

    prepared = load_prepared(data_dir)  # (the engine imports evaluation, never at module level the reverse)
    _check_split(prepared, split)
    device = resolve_device(device)
    model, vocab, info = load_model(checkpoint_path, device=device)
    data_config = (info.get("config") or {}).get("data", {})
    results = evaluate(
        model, prepared, split=split, device=device, i2t=i2t, num_workers=num_workers,
        batch_size=batch_size or int(data_config.get("eval_batch_size", 128)),
        height=int(data_config.get("height", 384)), width=int(data_config.get("width", 128)),
        max_length=int(data_config.get("max_length", 100)), memory_budget_mb=memory_budget_mb,
        progress=progress, vocab=vocab,
    )
    return {**results, "checkpoint": str(checkpoint_path), "epoch": info.get("epoch")}
