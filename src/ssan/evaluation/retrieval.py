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


def encode_gallery(
    model: nn.Module,
    records: Sequence[dict],
    image_root: Union[str, Path],
    transform,
    device: Device = None,
    batch_size: int = 128,
    num_workers: int = 0,
    progress: bool = True,
    keep_on_device: bool = False,
) -> dict:
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
    loader = make_loader(
        GalleryDataset(records, image_root, transform),
        batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    return encode_loader(model, loader, "gallery", progress, gallery_step(device), keep_on_device)


def encode_queries(
    model: nn.Module,
    records: Sequence[dict],
    device: Device = None,
    batch_size: int = 128,
    num_workers: int = 0,
    max_length: int = 100,
    progress: bool = True,
    keep_on_device: bool = False,
) -> dict:
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


def _direction_metrics(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    query_ids: torch.Tensor,
    gallery_ids: torch.Tensor,
    rows: int,
    ks: Sequence[int],
) -> Dict[str, float]:
    """Metrics of ``queries @ gallery.T`` computed ``rows`` query rows at a time."""
    accumulator = RankMetricAccumulator(ks)
    for start in range(0, len(queries), rows):
        scores = queries[start : start + rows] @ gallery.T
        accumulator.process(scores, query_ids[start : start + rows], gallery_ids)
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


def evaluate_features(
    image_feats: dict,
    text_feats: dict,
    query_ids,
    gallery_ids,
    terms: Optional[Sequence[str]] = None,
    i2t: bool = False,
    memory_budget_mb: float = 512,
    ks: Sequence[int] = DEFAULT_KS,
    device: Device = None,
) -> dict:
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
            text, image, query_ids, gallery_ids, similarity_rows(len(image), memory_budget_mb), ks
        )
        if i2t:
            directions["i2t"][name] = _direction_metrics(
                image, text, gallery_ids, query_ids, similarity_rows(len(text), memory_budget_mb), ks
            )
    return {**directions, "num_queries": len(query_ids), "num_gallery": len(gallery_ids)}


def _check_split(prepared, split: str) -> None:
    if split not in prepared.splits:
        raise DataError(
            f"split {split!r} is not in {prepared.directory}; available splits: {', '.join(prepared.splits) or 'none'}"
        )
