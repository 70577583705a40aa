"""Optimiser and learning-rate schedule of the paper's recipe (method section 5)."""

from __future__ import annotations

from typing import Iterable, Tuple

import torch
from torch import nn


def is_backbone_parameter(name: str) -> bool:
    """Parameters of the (pretrainable) image backbone get their own learning rate."""
    return name.startswith("backbone.") or ".backbone." in name


def build_optimizer(
    model: nn.Module,
    extra: Iterable[nn.Module] = (),
    *,
    lr: float,
    backbone_lr: float,
    betas: Tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Adam:
    """Adam with two parameter groups: the image backbone at ``backbone_lr``, everything else
    (new layers of ``model`` and the modules in ``extra``, e.g. the identity classifiers) at ``lr``."""
    backbone, new = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (backbone if is_backbone_parameter(name) else new).append(param)
    for module in extra:
        new.extend(p for p in module.parameters() if p.requires_grad)
    groups = [{"params": new, "lr": lr, "name": "new"}]
    if backbone:
        groups.append({"params": backbone, "lr": backbone_lr, "name": "backbone"})
    return torch.optim.Adam(groups, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, milestones, gamma: float) -> torch.optim.lr_scheduler.MultiStepLR:
    """MultiStepLR stepped once per epoch."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
