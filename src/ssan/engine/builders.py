"""The trainer's default components, built from a config: the class methods a subclass overrides.

``Trainer.from_config(config, data_dir, output_dir)`` calls, in order, ``build_model``,
``build_criterion``, ``build_optimizer``, ``build_scheduler`` and ``build_train_dataset``; a
subclass replaces any of them (fast-reid's ``build_*`` pattern), or pass components of your own
to ``Trainer(...)`` directly.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from torch import nn

from ssan import distributed
from ssan.config import Config
from ssan.devices import resolve_device


class ComponentBuilders:
    """Mixed into :class:`ssan.engine.trainer.Trainer`."""

    @classmethod
    def from_config(
        cls,
        config: Config,
        data_dir: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        *,
        device: Optional[str] = None,
        resume: bool = False,
        overwrite: bool = False,
        hooks: Iterable = (),
    ):
        """The trainer of ``config`` on the prepared dataset ``data_dir`` (today's ``ssan train``)."""
        from ssan.data import load_prepared
        from ssan.engine.results import check_run_folder

        check_run_folder(Path(output_dir), resume, overwrite)  # before the model is built: fail fast
        prepared = load_prepared(data_dir)
        info = distributed.current()
        device = resolve_device(device, info.local_rank if info.enabled else None)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, without touching the caller's RNG
            torch.manual_seed(config.train.seed)
            model = cls.build_model(config, prepared)
            criterion = cls.build_criterion(config, prepared)
        optimizer = cls.build_optimizer(config, model, criterion)
        return cls(
            config,
            prepared,
            model,
            criterion,
            optimizer,
            cls.build_scheduler(config, optimizer),
            cls.build_train_dataset(config, prepared),
            output_dir,
            device=device,
            resume=resume,
            overwrite=overwrite,
            hooks=hooks,
        )

    @classmethod
    def build_model(cls, config: Config, prepared) -> nn.Module:
        from ssan.models import SSAN

        return SSAN(len(prepared.vocab), config.model)

    @classmethod
    def build_criterion(cls, config: Config, prepared) -> nn.Module:
        from ssan.losses import build_criterion

        return build_criterion(config.loss, prepared.num_classes, config.model)

    @classmethod
    def build_optimizer(cls, config: Config, model: nn.Module, criterion: nn.Module) -> torch.optim.Optimizer:
        from ssan.engine.optim import build_optimizer

        optim = config.optim
        return build_optimizer(
            model,
            [criterion],
            lr=optim.lr,
            backbone_lr=optim.backbone_lr,
            betas=optim.betas,
            weight_decay=optim.weight_decay,
            eps=optim.eps,
            trunk_modules=optim.trunk_modules,
            bias_lr_factor=optim.bias_lr_factor,
            bias_weight_decay=optim.bias_weight_decay,
        )

    @classmethod
    def build_scheduler(cls, config: Config, optimizer: torch.optim.Optimizer):
        from ssan.engine.optim import build_scheduler

        optim = config.optim
        return build_scheduler(
            optimizer,
            optim.milestones,
            optim.gamma,
            schedule=optim.schedule,
            epochs=optim.epochs,
            warmup_epochs=optim.warmup_epochs,
            warmup_factor=optim.warmup_factor,
        )

    @classmethod
    def build_train_dataset(cls, config: Config, prepared):
        """The train split as samples; images as uint8 (normalised and flipped on the device, per step)."""
        from ssan.data import TrainDataset, build_transforms
        from ssan.data.tokenizers import ClipTokenizer, model_tokenizer

        transform = build_transforms(config.data.height, config.data.width, train=False, uint8=True)
        records = prepared.records("train")
        tokenizer = model_tokenizer(dataclasses.asdict(config.model), prepared.vocab, config.data.max_length)
        if isinstance(tokenizer, ClipTokenizer):  # the captions in CLIP's byte pairs: nothing prepared again
            records = tokenizer.encode_records(records)
        return TrainDataset(
            records,
            prepared.image_root,
            transform,
            max_length=config.data.max_length,
            seed=config.train.seed,
            cache_images=config.data.cache_images,
        )
