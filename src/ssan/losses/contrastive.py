"""InfoNCE over the batch: an extension, not part of SSAN (off by default).

Symmetric cross entropy over temperature-scaled cosine similarities; every pair with the
SAME identity label is a positive (multi-positive: the log-probabilities of an anchor's
positives are averaged).
"""

from __future__ import annotations

import torch
from torch import nn

from ssan.losses.ranking import cosine_matrix


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


class ContrastiveLoss(nn.Module):
    """Multi-positive InfoNCE on features of one type.

    Args:
        temperature: softmax temperature.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """image, text: B x ... features; labels: B. Returns a scalar."""
        return multi_positive_info_nce(cosine_matrix(image, text), labels, self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
