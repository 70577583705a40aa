"""Batched encoding of gallery images and captions into flat SSAN vectors.

Images are read with the data layer's safe loader; an unreadable file (corrupt,
truncated, not an image, a decompression bomb...) is skipped with a warning that
names it, never fatal. Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank encodes
every ``world_size``-th path and rank 0 gathers the pieces in the original order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ssan.errors import SsanError
from ssan.models import feature_terms, flatten_features
from ssan.search.encoders import pad_id_lists

log = logging.getLogger(__name__)


class GalleryFiles(Dataset):
    """Images by path; an item is ``{"index", "image"}`` or ``{"index", "error"}``.

    Args:
        paths: image files.
        transform: PIL image -> 3 x H x W tensor.
    """

    def __init__(self, paths: Sequence[Path], transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from ssan.data.images import load_rgb

        try:
            return {"index": index, "image": self.transform(load_rgb(self.paths[index]))}
        except SsanError as exc:
            return {"index": index, "error": getattr(exc, "reason", str(exc))}
        except (OSError, ValueError) as exc:
            return {"index": index, "error": f"cannot read ({exc})"}


def collate_gallery(items: List[dict]) -> dict:
    """Batch of readable images (``image`` may be None), their indices, and the failures."""
    good = [item for item in items if "image" in item]
    return {
        "image": torch.stack([item["image"] for item in good]) if good else None,
        "index": [item["index"] for item in good],
        "failed": [(item["index"], item["error"]) for item in items if "error" in item],
    }


def layout_of(feats: dict) -> dict:
    """Feature layout of flattened vectors: the terms, in order, and their widths."""
    terms = feature_terms(feats)
    widths = [int(feats[term][0].numel()) for term in terms]
    return {"terms": terms, "widths": widths, "dim": int(sum(widths))}


def encode_images(
    encoders,
    paths: Sequence[Path],
    transform,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
    on_batch: Optional[Callable[[list, np.ndarray, list, dict], None]] = None,
) -> dict:
    """Encode image files into flat vectors.

    ``on_batch(paths, features, failed, layout)`` is called after each batch with its readable
    paths (str), their vectors, its unreadable ``(path, reason)`` pairs and the feature layout.

    Returns:
        ``{"features": N' x F float32 (readable images only), "kept": [positions in paths],
        "failed": [(path, reason)], "layout": {...} or None when nothing was readable}``.
    """
    loader = DataLoader(
        GalleryFiles(paths, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_gallery,
        shuffle=False,
    )
    chunks, kept, failed, layout = [], [], [], None
    bar = tqdm(total=len(paths), desc="encoding images", unit="img", disable=not progress, leave=False)
    for batch in loader:
        bad = [(str(paths[i]), reason) for i, reason in batch["failed"]]
        failed.extend(bad)
        vectors = np.zeros((0, layout["dim"] if layout else 0), np.float32)
        if batch["image"] is not None:
            feats = encoders.image(batch["image"])
            layout = layout or layout_of(feats)
            vectors = flatten_features(feats).numpy().astype(np.float32, copy=False)
            chunks.append(vectors)
            kept.extend(batch["index"])
        if on_batch is not None:
            on_batch([str(paths[i]) for i in batch["index"]], vectors, bad, layout)
        bar.update(len(batch["index"]) + len(batch["failed"]))
    bar.close()
    features = np.concatenate(chunks) if chunks else np.zeros((0, layout["dim"] if layout else 0), np.float32)
    return {"features": features, "kept": kept, "failed": failed, "layout": layout}


def encode_token_lists(encoders, token_lists: Sequence[Sequence[int]], max_length: int, batch_size: int = 256):
    """Encode captions given as vocabulary ids into flat vectors (Q x F float32)."""
    chunks = []
    for start in range(0, len(token_lists), batch_size):
        tokens, lengths = pad_id_lists(token_lists[start : start + batch_size], max_length)
        feats = encoders.text(tokens, lengths)
        feats.pop("attention", None)
        chunks.append(flatten_features(feats).numpy().astype(np.float32, copy=False))
    if not chunks:
        raise SsanError("no captions to encode")
    return np.concatenate(chunks)


def encode_images_distributed(encoders, paths: Sequence[Path], transform, **kwargs) -> Optional[dict]:
    """:func:`encode_images` over the ranks of a ``torchrun`` launch.

    Each rank encodes ``paths[rank::world_size]``; rank 0 receives every piece and returns
    the merged result in the order of ``paths``; the other ranks return None. Without a
    process group this is :func:`encode_images`.
    """
    from ssan.distributed import current

    info = current()
    if not info.enabled:
        return encode_images(encoders, paths, transform, **kwargs)
    import torch.distributed as dist

    positions = list(range(info.rank, len(paths), info.world_size))
    kwargs["progress"] = kwargs.get("progress", True) and info.is_main
    part = encode_images(encoders, [paths[i] for i in positions], transform, **kwargs)
    part["kept"] = [positions[i] for i in part["kept"]]
    pieces = [None] * info.world_size if info.is_main else None
    dist.gather_object(part, pieces, dst=0)
    if not info.is_main:
        return None
    return merge_parts(pieces)


def merge_parts(pieces: Sequence[dict]) -> dict:
    """Merge per-rank results (``kept`` holding global positions) into path order."""
    layout = next((p["layout"] for p in pieces if p["layout"] is not None), None)
    kept = [pos for p in pieces for pos in p["kept"]]
    stacked = [p["features"] for p in pieces if len(p["features"])]
    features = np.concatenate(stacked) if stacked else np.zeros((0, layout["dim"] if layout else 0), np.float32)
    order = np.argsort(np.asarray(kept, dtype=np.int64), kind="stable")
    failed = sorted((f for p in pieces for f in p["failed"]), key=lambda item: item[0])
    return {
        "features": features[order] if len(order) else features,
        "kept": [kept[i] for i in order],
        "failed": failed,
        "layout": layout,
    }
