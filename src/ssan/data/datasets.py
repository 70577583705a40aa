"""Torch datasets over prepared records, and the collate function producing dict batches.

Records are the dicts of a prepared split (``{"image", "id", "label", "captions", "tokens"}``).

- :class:`TrainDataset`: one sample per (image, caption) pair, with a weak-positive caption
  drawn uniformly from the captions of the *other* images of the same identity. The draw uses a
  generator seeded from ``(seed, epoch, index)``, and the epoch travels in the sample key
  (``key = epoch * len(dataset) + index``, see :meth:`TrainDataset.key`), so the draws are the
  same whatever the number of workers, with persistent worker processes, and after a resume.
- :class:`GalleryDataset`: one sample per image. :class:`QueryDataset`: one per caption.
- :func:`collate_batch`: stacks images, pads token lists with 0 (to the longest in the batch)
  and adds ``lengths`` / ``weak_lengths`` (CPU long tensors).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ssan.data.images import load_rgb
from ssan.errors import DataError

Transform = Callable[[object], torch.Tensor]


def _check_tokens(records: Sequence[dict]) -> None:
    for i, record in enumerate(records):
        if not record.get("tokens") or not all(record["tokens"]):
            raise DataError(f"record {i} ({record.get('image')}): every caption needs at least one token")


def _tokens(ids: Sequence[int], max_length: int) -> torch.Tensor:
    return torch.tensor(list(ids[:max_length]), dtype=torch.long)


class TrainDataset(Dataset):
    """(image, caption) pairs of the training split.

    Args:
        records: prepared train records (``label`` must be set).
        image_root: folder the ``image`` paths are relative to.
        transform: PIL image -> 3 x H x W tensor (see :func:`ssan.data.build_transforms`; the
            trainer uses its ``uint8`` form and normalises on the device).
        max_length: captions are truncated to this many tokens.
        seed: seed of the weak-positive draws.
        cache_images: keep each transformed image in memory after its first load (the
            transform must be deterministic; with worker processes each worker holds its own
            copy). For small sets: it takes image decoding off every epoch after the first.
    Sample: ``image`` 3xHxW, ``tokens`` (T,) long, ``weak_tokens`` (T',) long, ``label``, ``id``,
    ``index`` (the pair index, without the epoch).
    """

    def __init__(
        self,
        records: Sequence[dict],
        image_root: Union[str, Path],
        transform: Transform,
        max_length: int = 100,
        seed: int = 0,
        cache_images: bool = False,
    ):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.transform = transform
        self.max_length = max_length
        self.seed = seed
        self._cache: Optional[Dict[int, torch.Tensor]] = {} if cache_images else None
        _check_tokens(self.records)
        self.samples: List[Tuple[int, int]] = [
            (r, c) for r, rec in enumerate(self.records) for c in range(len(rec["tokens"]))
        ]
        self._pools = self._weak_pools()

    def _weak_pools(self) -> List[Tuple[List[Tuple[int, int]], int, int]]:
        """Per record: (captions of its identity, start of its own block, size of its own block)."""
        by_label: Dict[int, List[int]] = defaultdict(list)
        for r, record in enumerate(self.records):
            if not isinstance(record.get("label"), int):
                raise DataError(f"record {r} ({record.get('image')}) has no training label")
            by_label[record["label"]].append(r)
        pools: List[Tuple[List[Tuple[int, int]], int, int]] = [([], 0, 0)] * len(self.records)
        for label, members in by_label.items():
            if len(members) < 2:
                raise DataError(
                    f"label {label} (id {self.records[members[0]]['id']}) has a single image; "
                    "the weak positive needs another image of the same identity"
                )
            pool = [(r, c) for r in members for c in range(len(self.records[r]["tokens"]))]
            start = 0
            for r in members:
                count = len(self.records[r]["tokens"])
                pools[r] = (pool, start, count)
                start += count
        return pools

    def __len__(self) -> int:
        return len(self.samples)

    def image(self, record: int) -> torch.Tensor:
        """The transformed image of record ``record`` (from the cache when it is on)."""
        if self._cache is not None and record in self._cache:
            return self._cache[record]
        image = self.transform(load_rgb(self.image_root / self.records[record]["image"]))
        if self._cache is not None:
            self._cache[record] = image
        return image

    def key(self, index: int, epoch: int) -> int:
        """The sample key of pair ``index`` in ``epoch`` (what the training sampler yields)."""
        return int(epoch) * len(self.samples) + int(index)

    def weak_choice(self, index: int, epoch: int = 0) -> Tuple[int, int]:
        """(record, caption) of pair ``index``'s weak positive in ``epoch``."""
        record, _ = self.samples[index]
        pool, start, count = self._pools[record]
        rng = np.random.default_rng([self.seed, epoch, index])
        j = int(rng.integers(len(pool) - count))
        return pool[j + count if j >= start else j]

    def __getitem__(self, key: int) -> dict:
        """Sample ``key`` (:meth:`key`; a plain pair index means epoch 0)."""
        epoch, index = divmod(int(key), len(self.samples))
        r, c = self.samples[index]
        record = self.records[r]
        weak_r, weak_c = self.weak_choice(index, epoch)
        return {
            "image": self.image(r),
            "tokens": _tokens(record["tokens"][c], self.max_length),
            "weak_tokens": _tokens(self.records[weak_r]["tokens"][weak_c], self.max_length),
            "label": record["label"],
            "id": record["id"],
            "index": index,
        }


class GalleryDataset(Dataset):
    """One sample per image: ``image`` 3xHxW, ``id`` (raw identity), ``index`` (record position)."""

    def __init__(self, records: Sequence[dict], image_root: Union[str, Path], transform: Transform):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = self.transform(load_rgb(self.image_root / record["image"]))
        return {"image": image, "id": record["id"], "index": index}


class QueryDataset(Dataset):
    """One sample per caption: ``tokens`` (T,), ``id``, ``index`` (query position), ``image_index``."""

    def __init__(self, records: Sequence[dict], max_length: int = 100):
        self.records = list(records)
        self.max_length = max_length
        _check_tokens(self.records)
        self.queries: List[Tuple[int, int]] = [
            (r, c) for r, rec in enumerate(self.records) for c in range(len(rec["tokens"]))
        ]

    def __len__(self) -> int:
        return len(self.queries)

    def caption(self, index: int) -> str:
        r, c = self.queries[index]
        return self.records[r]["captions"][c]

    def __getitem__(self, index: int) -> dict:
        r, c = self.queries[index]
        record = self.records[r]
        return {
            "tokens": _tokens(record["tokens"][c], self.max_length),
            "id": record["id"],
            "index": index,
            "image_index": r,
        }


def pad_tokens(sequences: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D long tensors with 0: returns (B x max_len tokens, B lengths)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    padded = torch.zeros(len(sequences), int(lengths.max()) if len(sequences) else 0, dtype=torch.long)
    for i, seq in enumerate(sequences):
        padded[i, : len(seq)] = seq
    return padded, lengths


def collate_batch(samples: Sequence[dict]) -> Dict[str, torch.Tensor]:
    """Dict batch of any of the three datasets' samples.

    ``image`` -> B x 3 x H x W; ``tokens`` -> B x T (0-padded) plus ``lengths`` (B); ``weak_tokens``
    -> B x T' plus ``weak_lengths``; integer keys (``label``, ``id``, ``index``, ``image_index``) -> B long.
    """
    batch: Dict[str, torch.Tensor] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "image":
            batch[key] = torch.stack(values)
        elif key == "tokens":
            batch["tokens"], batch["lengths"] = pad_tokens(values)
        elif key == "weak_tokens":
            batch["weak_tokens"], batch["weak_lengths"] = pad_tokens(values)
        else:
            batch[key] = torch.tensor(values, dtype=torch.long)
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    drop_last: bool = False,
    sampler=None,
    generator: Optional[torch.Generator] = None,
    pin_memory: bool = False,
    persistent: bool = False,
) -> DataLoader:
    """A DataLoader using :func:`collate_batch`.

    ``persistent`` keeps the worker processes alive between passes (when ``num_workers`` > 0),
    so an object iterated every epoch forks its workers once.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=collate_batch,
        generator=generator,
        pin_memory=pin_memory,
        persistent_workers=persistent and num_workers > 0,
    )
