"""Optimiser and learning-rate schedule: the paper's recipe (method section 5) and the CLIP-era one.

Parameter groups: the trunks (``trunk_modules``, by default the image backbone) at ``backbone_lr``,
everything else (new layers and the modules in ``extra``, e.g. the identity classifiers) at ``lr``.
With ``bias_lr_factor`` != 1 or a ``bias_weight_decay``, biases get groups of their own (IRRA:
biases at 2x their group's rate, without weight decay): ``new``, ``new_bias``, ``trunk``... The
schedule is MultiStepLR or a cosine to 0, either after a linear warm-up, stepped once per epoch.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence, Tuple

import torch
from torch import nn


def is_backbone_parameter(name: str, trunk_modules: Sequence[str] = ("backbone",)) -> bool:
    """Parameters of the (pretrainable) trunks get their own learning rate."""
    return any(name.startswith(f"{module}.") or f".{module}." in name for module in trunk_modules)


def is_bias(name: str) -> bool:
    """A bias: its own name holds ``bias`` (``bias``, ``in_proj_bias``), as IRRA's ``"bias" in key`` rule."""
    return "bias" in name.rsplit(".", 1)[-1]


def parameter_groups(
    model: nn.Module,
    extra: Iterable[nn.Module] = (),
    *,
    lr: float,
    backbone_lr: float,
    weight_decay: float = 0.0,
    trunk_modules: Sequence[str] = ("backbone",),
    bias_lr_factor: float = 1.0,
    bias_weight_decay: Optional[float] = None,
) -> list:
    """Adam's parameter groups, each ``{"name", "params", "lr", "weight_decay"}`` (empty groups left out)."""
    split_bias = bias_lr_factor != 1.0 or bias_weight_decay is not None
    named = [(n, p, is_backbone_parameter(n, trunk_modules)) for n, p in model.named_parameters()]
    named += [(n, p, False) for module in extra for n, p in module.named_parameters()]  # always new
    groups: dict = {}
    for name, param, trunk in named:
        if not param.requires_grad:
            continue
        kind = "backbone" if trunk else "new"
        bias = split_bias and is_bias(name)
        key = f"{kind}_bias" if bias else kind
        if key not in groups:
            rate = backbone_lr if kind == "backbone" else lr
            decay = bias_weight_decay if bias and bias_weight_decay is not None else weight_decay
            groups[key] = {"name": key, "params": [], "lr": rate * (bias_lr_factor if bias else 1.0)}
            groups[key]["weight_decay"] = decay
        groups[key]["params"].append(param)
    order = ("new", "backbone", "new_bias", "backbone_bias")
    return [groups[key] for key in order if key in groups]


def build_optimizer(
    model: nn.Module,
    extra: Iterable[nn.Module] = (),
    *,
    lr: float,
    backbone_lr: float,
    betas: Tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    **groups,
) -> torch.optim.Adam:
    """Adam over :func:`parameter_groups` (``groups``: its keyword arguments besides the rates).

    The paper's recipe: ``new`` at ``lr``, ``backbone`` at ``backbone_lr``, no weight decay.
    """
    param_groups = parameter_groups(model, extra, lr=lr, backbone_lr=backbone_lr, **groups)
    return torch.optim.Adam(
        param_groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=groups.get("weight_decay", 0.0)
    )


def schedule_factor(
    epoch: int,
    *,
    schedule: str,
    epochs: int,
    milestones=(),
    gamma: float = 0.1,
    warmup_epochs: int = 0,
    warmup_factor=0.1,
) -> float:
    """The rate multiplier of ``epoch`` (0-based): linear warm-up from ``warmup_factor``, then the schedule.

    cosine (IRRA's): 0.5 (1 + cos(pi (epoch - warmup) / (epochs - warmup))), reaching 0 after the last epoch.
    """
    if epoch < warmup_epochs:
        alpha = epoch / warmup_epochs
        return warmup_factor * (1 - alpha) + alpha
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1)))
    return gamma ** sum(epoch >= m for m in milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    milestones,
    gamma: float,
    *,
    schedule: str = "multistep",
    epochs: int = 0,
    warmup_epochs: int = 0,
    warmup_factor: float = 0.1,
):
    """MultiStepLR (the paper's), or a LambdaLR of :func:`schedule_factor`; stepped once per epoch."""
    if schedule == "multistep" and not warmup_epochs:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    settings = dict(
        schedule=schedule,
        epochs=epochs,
        milestones=tuple(milestones),
        gamma=gamma,
        warmup_epochs=warmup_epochs,
        warmup_factor=warmup_factor,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: schedule_factor(epoch, **settings))
