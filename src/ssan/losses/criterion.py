"""SSANCriterion: the weighted sum of the loss terms named in the config, over every feature type."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from torch import nn

from ssan.config import LossConfig
from ssan.errors import ConfigError
from ssan.losses.terms import LOSS_TERMS, LossContext, StepInputs

log = logging.getLogger(__name__)


class SSANCriterion(nn.Module):
    """The SSAN training objective (method section 4) and any registered extra term.

    total = sum over terms t of  w_t * (L_t,global + p * (L_t,parts + L_t,relation)),  p = part_weight,

    with the terms and weights of ``config.terms`` (default ``{"id": 1.0, "cr": 1.0}``: identity
    plus compound ranking, the method; ``nce`` adds InfoNCE). A term of weight 0 is not built.
    Holds the terms' training-only state (the identity classifiers); its device follows
    ``.to(device)``.

    Args:
        context: model widths and class count (:class:`ssan.losses.LossContext`).
        config: the whole :class:`ssan.config.LossConfig`.
        **fields: any of its fields, overriding ``config``.
    """

    def __init__(self, context: LossContext, config: Optional[LossConfig] = None, **fields) -> None:
        super().__init__()
        known = {f.name for f in dataclasses.fields(LossConfig)}
        if set(fields) - known:
            raise ConfigError(
                f"unknown loss setting {sorted(set(fields) - known)[0]!r}; valid: {', '.join(sorted(known))}"
            )
        config = dataclasses.replace(config or LossConfig(), **fields)
        self.context = context
        unused = sorted(set(config.options) - set(config.terms))
        if unused:
            raise ConfigError(
                f"loss.options names {unused[0]!r}, which is not in loss.terms ({', '.join(config.terms)})"
            )
        self.weights = {name: float(weight) for name, weight in config.terms.items() if weight}
        if not self.weights:
            raise ConfigError("loss.terms gives every term weight 0: nothing to train")
        self.terms = nn.ModuleDict(
            {
                name: LOSS_TERMS.get(name).from_config(context, config, dict(config.options.get(name) or {}))
                for name in self.weights
            }
        )
        self.feature_weights = {"global": 1.0, "parts": config.part_weight, "relation": config.part_weight}

    def forward(self, outputs: dict, batch: dict, step: Optional[StepInputs] = None) -> dict:
        """Loss terms for one batch.

        Args:
            outputs: ``SSAN.forward(batch)``: ``{"image", "text", "weak_text"}`` feature dicts.
            batch: the training batch (``label``: B training labels 0..num_classes-1).
            step: epoch, random generator and cross-process gather (defaults: epoch 0, one process).

        Returns:
            ``{"<term>_<feature>": scalar, ..., "total": scalar}``, e.g. ``id_global``, ``cr_parts``.
        """
        step = step or StepInputs()
        if "global" not in outputs["image"]:
            raise ValueError("image features lack the 'global' term")
        out, total = {}, 0.0
        for name, term in self.terms.items():
            for feature, value in term(outputs, batch, step).items():
                out[f"{name}_{feature}"] = value
                total = total + self.weights[name] * self.feature_weights.get(feature, 1.0) * value
        out["total"] = total
        return out


def upgrade_state_dict(state: dict) -> dict:
    """A criterion state dict of ssan 0.1 (``identity.<feature>.*``) in today's key layout."""
    return {
        (f"terms.id.classifiers.{key[len('identity.') :]}" if key.startswith("identity.") else key): value
        for key, value in state.items()
    }


def build_criterion(config: LossConfig, num_classes: int, model_config) -> SSANCriterion:
    """The criterion for a model of ``model_config`` (a :class:`ssan.config.ModelConfig`) and ``num_classes``."""
    context = LossContext(
        num_classes=num_classes,
        num_parts=model_config.num_parts,
        embed_dim=model_config.embed_dim,
        parts=model_config.parts,
    )
    return SSANCriterion(context, config)
