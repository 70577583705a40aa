"""InfoNCE over the batch: an extension, not part of SSAN (off by default).

Symmetric cross entropy over temperature-scaled cosine similarities; every pair with the
SAME identity label is a positive (multi-positive: the log-probabilities of an anchor's
positives are averaged).
"""

from __future__ import annotations

from typing import Dict

import torch

from ssan.errors import ConfigError
from ssan.losses.ranking import cosine_matrix
from ssan.losses.terms import LossContext, LossTerm, StepInputs, present_features, register_loss_term


def multi_positive_info_nce(sim: torch.Tensor, labels: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """sim: B x B cosines (image rows, text columns); labels: B. Returns the mean of both directions.

    Image anchor i: -mean_{j: y_j = y_i} log softmax_j(sim[i, :] / T)[j]; text anchors the same on columns.
    """
    labels = labels.to(sim.device)
    positives = (labels[:, None] == labels[None, :]).to(sim.dtype)
    logits = sim / temperature

    def direction(scores: torch.Tensor) -> torch.Tensor:
        log_prob = scores.log_softmax(dim=1)
        return (-(log_prob * positives).sum(dim=1) / positives.sum(dim=1)).mean()

    return (direction(logits) + direction(logits.T)) / 2


@register_loss_term("nce")
class InfoNCETerm(LossTerm):
    """Multi-positive InfoNCE of each feature type, on the global batch (an extension, off by default).

    Args:
        context: the :class:`LossContext`.
        temperature: softmax temperature.
    """

    def __init__(self, context: LossContext, temperature: float = 0.05) -> None:
        super().__init__(context)
        if temperature <= 0:
            raise ConfigError(f"the InfoNCE temperature must be positive, got {temperature}")
        self.temperature = temperature

    @classmethod
    def from_config(cls, context: LossContext, config, options: dict) -> InfoNCETerm:
        return super().from_config(context, config, {"temperature": config.temperature, **options})

    def forward(self, outputs: dict, batch: dict, step: StepInputs) -> Dict[str, torch.Tensor]:
        labels = step.gather(batch["label"])
        return {
            feature: multi_positive_info_nce(
                cosine_matrix(
                    step.gather(outputs["image"][feature].flatten(1)), step.gather(outputs["text"][feature].flatten(1))
                ),
                labels,
                self.temperature,
            )
            for feature in present_features(outputs, self.context)
        }

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
