"""Config sections -> explicit constructor arguments (the only place that reads a Config)."""

from __future__ import annotations

import dataclasses

from ssan.config import Config, DataConfig, ModelConfig


def model_kwargs(cfg: ModelConfig, vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, **dataclasses.asdict(cfg)}


def build_model(cfg: ModelConfig, vocab_size: int):
    from ssan.models import SSAN

    return SSAN(vocab_size, cfg)


def build_criterion(cfg: Config, num_classes: int, model):
    from ssan.losses import SSANCriterion

    loss = cfg.loss
    return SSANCriterion(
        num_classes=num_classes,
        num_parts=cfg.model.num_parts,
        embed_dim=cfg.model.embed_dim,
        parts=cfg.model.parts,
        margin=loss.margin,
        beta=loss.beta,
        weak_warmup_epochs=loss.weak_warmup_epochs,
        weak_skip=loss.weak_skip,
        part_weight=loss.part_weight,
        id_weight=loss.id_weight,
        contrastive_weight=loss.contrastive_weight,
        temperature=loss.temperature,
    )


def training_dataset(prepared, cfg: DataConfig, seed: int = 0):
    """The train split as (image, caption, weak caption, label) samples.

    Flips are applied by the trainer per step (seeded by the step), so the dataset's
    transform is deterministic and resuming mid-epoch is exact with any worker count.
    """
    from ssan.data import TrainDataset, build_transforms

    transform = build_transforms(cfg.height, cfg.width, train=True, flip=False)
    return TrainDataset(
        prepared.records("train"), prepared.image_root, transform, max_length=cfg.max_length, seed=seed
    )
