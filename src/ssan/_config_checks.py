"""Ranges of the numeric settings of :class:`ssan.config.Config`, checked when a config is loaded.

A value out of range fails at load with one line naming the setting, before anything is
written or built (``optim.epochs=0`` would otherwise train nothing and report an untrained
model; ``data.num_workers=-1`` would end in a DataLoader traceback).
"""

from __future__ import annotations

import math

from ssan.errors import ConfigError

AT_LEAST = {  # setting -> its smallest valid value
    "data.height": 1,
    "data.width": 1,
    "data.max_length": 1,
    "data.batch_size": 1,
    "data.eval_batch_size": 1,
    "data.num_workers": 0,
    "model.num_parts": 1,
    "model.embed_dim": 1,
    "model.word_dim": 1,
    "model.hidden_dim": 1,
    "model.cnn_width": 1,
    "model.dropout": 0,
    "loss.margin": 0,
    "loss.beta": 0,
    "loss.weak_warmup_epochs": 0,
    "loss.part_weight": 0,
    "optim.epochs": 1,
    "optim.backbone_lr": 0,  # 0 freezes the backbone
    "optim.weight_decay": 0,
    "train.seed": 0,
    "train.eval_every": 1,
    "train.max_steps_per_epoch": 0,
    "train.log_every": 1,
    "train.cpu_threads": 0,
    "train.checkpoint_every": 0,
}
POSITIVE = ("optim.lr", "optim.gamma", "loss.temperature")  # settings that must be above 0
BELOW_ONE = ("model.dropout",)  # settings that must be below 1


def check_numbers(config) -> None:
    """Raise :class:`ConfigError` for the first numeric setting of ``config`` out of its range."""
    for name, low in AT_LEAST.items():
        _check(name, _value(config, name), lambda v, low=low: v >= low, f"at least {low}")
    for name in POSITIVE:
        _check(name, _value(config, name), lambda v: v > 0, "above 0")
    for name in BELOW_ONE:
        _check(name, _value(config, name), lambda v: v < 1, "below 1")
    for name, weight in config.loss.terms.items():
        _check(f"loss.terms.{name}", weight, lambda v: v >= 0, "at least 0")
    betas = config.optim.betas
    if len(betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers, got {list(betas)}")
    for beta in betas:
        _check("optim.betas", beta, lambda v: 0 <= v < 1, "in [0, 1)")
    for milestone in config.optim.milestones:
        if isinstance(milestone, bool) or not isinstance(milestone, int):
            raise ConfigError(f"optim.milestones must be epoch numbers, got {list(config.optim.milestones)}")
        _check("optim.milestones", milestone, lambda v: v >= 1, "at least 1")


def _value(config, name: str):
    section, key = name.split(".")
    return getattr(getattr(config, section), key)


def _check(name: str, value, valid, wanted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number {wanted}, got {value!r}")
    if not math.isfinite(value) or not valid(value):
        raise ConfigError(f"{name} must be {wanted}, got {value!r}")
