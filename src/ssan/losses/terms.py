"""Loss terms: one module per term, one registry, summed with weights by :class:`SSANCriterion`.

A term maps the model's training outputs to one loss per feature type::

    term(outputs, batch, step) -> {"global": scalar, "parts": scalar, "relation": scalar}

where ``outputs`` is ``SSAN.forward``'s ``{"image", "text", "weak_text"}`` feature dicts,
``batch`` the training batch (``label``...) and ``step`` a :class:`StepInputs`. The criterion
logs each value as ``<term>_<feature>`` and adds ``weight * feature_weight * value`` to the total
(the feature weights are 1 for ``global`` and ``loss.part_weight`` for ``parts`` and ``relation``).

A new term is one class and one line of config::

    from ssan.losses import LossTerm, register_loss_term

    @register_loss_term("triplet")
    class Triplet(LossTerm):
        def __init__(self, context, margin=0.3):
            ...

    # --set loss.terms.triplet=1.0 --set loss.options='{triplet: {margin: 0.2}}'

Terms that compare samples with each other (ranking, InfoNCE) call ``step.gather`` on their
inputs so that under DDP they see the global batch (see :mod:`ssan.distributed`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch
from torch import nn

from ssan.errors import ConfigError
from ssan.registry import Registry


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass(frozen=True)
class LossContext:
    """What a term may need to know to build itself: the model's widths and the class count."""

    num_classes: int
    num_parts: int
    embed_dim: int
    parts: bool = True

    def features(self) -> Dict[str, int]:
        """Feature type -> width of one part (``global``: D; ``parts``: D; ``relation``: D/2)."""
        widths = {"global": self.embed_dim}
        if self.parts:
            widths.update(parts=self.embed_dim, relation=self.embed_dim // 2)
        return widths


@dataclass
class StepInputs:
    """Per-step inputs of a term besides features and batch.

    epoch: 0-based epoch (the weak-margin schedule reads it).
    generator: random generator for sampling inside the loss (semi-hard negatives), on the
        features' device; None uses the global generator.
    gather: all-gathers a tensor's rows across processes with gradients (identity alone).
    """

    epoch: int = 0
    generator: Optional[torch.Generator] = None
    gather: Callable[[torch.Tensor], torch.Tensor] = field(default=_identity)


class LossTerm(nn.Module):
    """Base class of a loss term (see the module docstring for the contract).

    Args:
        context: the :class:`LossContext`.
        **options: the term's own settings (``loss.options.<name>`` in the config).
    """

    def __init__(self, context: LossContext, **options) -> None:
        super().__init__()
        if options:
            raise ConfigError(f"{type(self).__name__} takes no options, got {', '.join(sorted(options))}")
        self.context = context

    @classmethod
    def from_config(cls, context: LossContext, config, options: dict) -> LossTerm:
        """Build from the whole :class:`ssan.config.LossConfig` plus this term's ``options``."""
        try:
            return cls(context, **options)
        except TypeError as exc:
            raise ConfigError(f"loss term {cls.__name__}: {exc}") from None

    def forward(self, outputs: dict, batch: dict, step: StepInputs) -> Dict[str, torch.Tensor]:
        """The term's named losses (``{"<name>_<feature>": scalar}``); every registered term defines it."""
        raise NotImplementedError(f"loss term {type(self).__name__} defines no forward(outputs, batch, step)")


LOSS_TERMS: Registry = Registry("loss term", ConfigError)


def register_loss_term(name: str, *, overwrite: bool = False):
    """Class decorator: register a :class:`LossTerm` subclass as ``loss.terms.<name>``."""

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, LossTerm)):
            raise TypeError(f"loss term {name!r} must be a LossTerm subclass, got {cls!r}")
        LOSS_TERMS.register(name, cls, overwrite=overwrite)
        return cls

    return decorate


def present_features(outputs: dict, context: LossContext) -> list:
    """The feature types present in both the image outputs and the context, in canonical order."""
    return [term for term in context.features() if term in outputs["image"]]
