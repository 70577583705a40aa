"""Dataset formats: one registered object per annotation layout, read by ``prepare`` and written by ``synth``.

| format       | annotation file (first found)          | image field | splits            |
|--------------|----------------------------------------|-------------|-------------------|
| `cuhk-pedes` | `reid_raw.json`, `caption_all.json`    | `file_path` | train / val / test|
| `icfg-pedes` | `ICFG-PEDES.json`, `ICFG_PEDES.json`   | `file_path` | train / test      |
| `rstpreid`   | `data_captions.json`                   | `img_path`  | train / val / test|

A :class:`DatasetFormat` says where a layout's annotation file is and which fields and splits
its records have (what :func:`ssan.data.annotations.read_annotations` checks), and how the
synthetic generator writes a set in it (file names of the images, one record). A new layout is
one subclass registered with :func:`register_dataset_format`; ``ssan prepare --dataset`` and
``ssan synth --format`` accept it from then on (see ``docs/extending.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from ssan.data.vocab import tokenize
from ssan.errors import DataError
from ssan.registry import Registry

IMAGE_FIELDS = ("file_path", "img_path")


@dataclass(frozen=True)
class DatasetFormat:
    """An annotation layout.

    name: the ``--dataset`` / ``--format`` value.
    files: annotation file names under the dataset root, the first one found is read (the
        generator writes ``files[0]``).
    image_field: the record field holding the image path (``file_path`` and ``img_path`` are
        both accepted in every layout).
    splits: the split values a record may have (compared lower-case); None keeps ``train`` and
        ``test`` and reads anything else as ``val``.
    Generator settings: ``id_base`` (the first identity), ``synth_splits`` (the splits it writes),
    ``images_per_id`` and ``captions`` (per image, inclusive range), ``tight_captions`` (chance
    that a caption's sentences are joined without a space after the full stop).
    """

    name: str
    files: Tuple[str, ...]
    image_field: str = "file_path"
    splits: Optional[Tuple[str, ...]] = None
    id_base: int = 0
    synth_splits: Tuple[str, ...] = ("train", "val", "test")
    images_per_id: int = 4
    captions: Tuple[int, int] = (1, 3)
    tight_captions: float = 0.0

    def image_paths(self, raw_id: int, count: int, rng: np.random.Generator) -> List[str]:
        """Image paths (relative to ``imgs/``) of identity ``raw_id``'s ``count`` synthetic images."""
        return [f"{raw_id:06d}_{k:03d}.jpg" for k in range(count)]

    def record(self, split: str, raw_id: int, path: str, captions: List[str]) -> dict:
        """The annotation record the generator writes for one image."""
        return {
            "split": split,
            "captions": captions,
            self.image_field: path,
            "processed_tokens": [tokenize(c) for c in captions],
            "id": raw_id,
        }


class CuhkPedes(DatasetFormat):
    """CUHK-PEDES: 1-based ids; images under ``CUHK01/``, ``CUHK03/`` and ``Market/``."""

    def image_paths(self, raw_id: int, count: int, rng: np.random.Generator) -> List[str]:
        source = ("CUHK01", "CUHK03", "Market")[int(rng.integers(3))]
        if source == "CUHK01":
            return [f"CUHK01/{raw_id:04d}{k + 1:03d}.png" for k in range(count)]
        if source == "CUHK03":
            return [f"CUHK03/{raw_id}_{k + 1}.png" for k in range(count)]
        return [
            f"Market/{raw_id:04d}_c{int(rng.integers(1, 7))}s1_{k * 25 + int(rng.integers(25)):06d}_00.jpg"
            for k in range(count)
        ]


class IcfgPedes(DatasetFormat):
    """ICFG-PEDES: 0-based contiguous train ids; MSMT17 paths whose ``train/``/``test/`` folder is not the split."""

    def image_paths(self, raw_id: int, count: int, rng: np.random.Generator) -> List[str]:
        folder = ("train", "test")[int(rng.integers(2))]
        msmt = (raw_id * 7919 + 627) % 10000 + 10000 * (raw_id // 10000)  # unique per identity
        names = []
        for k in range(count):
            day = ("morning", "noon", "afternoon")[int(rng.integers(3))]
            names.append(
                f"{folder}/{msmt:04d}/{msmt:04d}_{k:03d}_{int(rng.integers(1, 16)):02d}_"
                f"{int(rng.integers(101, 1232)):04d}{day}_{int(rng.integers(10000)):04d}_{k % 2}.jpg"
            )
        return names


class RstpReid(DatasetFormat):
    """RSTPReid: ``img_path``, no ``processed_tokens``, two captions per image, 5 images per id."""

    def image_paths(self, raw_id: int, count: int, rng: np.random.Generator) -> List[str]:
        return [
            f"{raw_id:04d}_c{int(rng.integers(1, 16))}_{k * 10 + int(rng.integers(10)):04d}.jpg" for k in range(count)
        ]

    def record(self, split: str, raw_id: int, path: str, captions: List[str]) -> dict:
        return {"id": raw_id, "img_path": path, "captions": captions, "split": split}


DATASET_FORMATS: Registry = Registry("dataset format", DataError)


def register_dataset_format(fmt: DatasetFormat, *, overwrite: bool = False) -> DatasetFormat:
    """Register ``fmt`` under ``fmt.name``; returns it."""
    if not isinstance(fmt, DatasetFormat):
        raise TypeError(f"a dataset format must be a DatasetFormat, got {fmt!r}")
    return DATASET_FORMATS.register(fmt.name, fmt, overwrite=overwrite)


def dataset_format(name: str) -> DatasetFormat:
    """The registered format ``name`` (DataError listing the valid names otherwise)."""
    return DATASET_FORMATS.get(name)


register_dataset_format(CuhkPedes("cuhk-pedes", ("reid_raw.json", "caption_all.json"), id_base=1))
register_dataset_format(
    IcfgPedes(
        "icfg-pedes",
        ("ICFG-PEDES.json", "ICFG_PEDES.json"),
        splits=("train", "test"),
        synth_splits=("train", "test"),
        captions=(1, 1),
    )
)
register_dataset_format(
    RstpReid(
        "rstpreid",
        ("data_captions.json",),
        image_field="img_path",
        images_per_id=5,
        captions=(2, 2),
        tight_captions=0.8,
    )
)
