"""Identity (ID) loss: per-part linear classifiers shared by the image and text features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IdentityLoss(nn.Module):
    """L_id = (1/P) sum_k [CE(W_k v_k, y) + CE(W_k t_k, y)] (method section 4).

    ``P`` linear classifiers (with bias), one per part; classifier k scores image part k
    and text part k. Weights N(0, 0.001), bias 0. Training-only state.

    Args:
        num_classes: N_id.
        in_dim: feature width.
        num_parts: P (1 for the global feature).
    """

    def __init__(self, num_classes: int, in_dim: int, num_parts: int = 1) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.weight = nn.Parameter(torch.empty(num_parts, num_classes, in_dim))
        self.bias = nn.Parameter(torch.empty(num_parts, num_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.001)
        nn.init.zeros_(self.bias)

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """feats: B x D or B x P x D -> logits B x P x N."""
        if feats.dim() == 2:
            feats = feats.unsqueeze(1)
        if feats.size(1) != self.num_parts:
            raise ValueError(f"expected {self.num_parts} parts, got features of shape {tuple(feats.shape)}")
        return torch.einsum("bpd,pnd->bpn", feats, self.weight) + self.bias

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """image, text: B x D or B x P x D; labels: B (0..N-1). Returns a scalar."""
        logits = self.logits(torch.cat([image, text], dim=0))  # 2B x P x N
        targets = torch.cat([labels, labels]).to(logits.device)
        per_sample = F.cross_entropy(logits.transpose(1, 2), targets[:, None].expand(-1, self.num_parts),
                                     reduction="none")  # 2B x P
        batch = labels.numel()
        return per_sample[:batch].mean() + per_sample[batch:].mean()
