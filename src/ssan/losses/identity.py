"""Identity (ID) loss: per-part linear classifiers shared by the image and text features."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from ssan.losses.terms import LossContext, LossTerm, StepInputs, present_features, register_loss_term


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
        """feats: B x D or B x P x D -> logits B x P x N, in float32 (also under autocast)."""
        if feats.dim() == 2:
            feats = feats.unsqueeze(1)
        if feats.size(1) != self.num_parts:
            raise ValueError(f"expected {self.num_parts} parts, got features of shape {tuple(feats.shape)}")
        with torch.autocast(feats.device.type, enabled=False):
            return torch.einsum("bpd,pnd->bpn", feats.float(), self.weight.float()) + self.bias.float()

    def forward(self, image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """image, text: B x D or B x P x D; labels: B (0..N-1). Returns a float32 scalar.

        The cross entropy is written as log-softmax + gather (the same value as
        ``F.cross_entropy``), whose CUDA backward is deterministic under
        ``torch.use_deterministic_algorithms`` (``nll_loss`` has no deterministic kernel there).
        """
        logits = self.logits(torch.cat([image, text], dim=0))  # 2B x P x N
        targets = torch.cat([labels, labels]).to(logits.device)
        log_prob = F.log_softmax(logits, dim=-1)
        index = targets[:, None, None].expand(-1, self.num_parts, 1)
        per_sample = -log_prob.gather(-1, index).squeeze(-1)  # 2B x P
        batch = labels.numel()
        return per_sample[:batch].mean() + per_sample[batch:].mean()


@register_loss_term("id")
class IdentityTerm(LossTerm):
    """The identity loss of each feature type (global: 1 classifier; parts, relation: K each)."""

    def __init__(self, context: LossContext) -> None:
        super().__init__(context)
        parts = {"global": 1, "parts": context.num_parts, "relation": context.num_parts}
        self.classifiers = nn.ModuleDict(
            {
                feature: IdentityLoss(context.num_classes, width, parts[feature])
                for feature, width in context.features().items()
            }
        )

    def forward(self, outputs: dict, batch: dict, step: StepInputs) -> Dict[str, torch.Tensor]:
        """A per-process mean: under DDP, the gradient average makes it the global batch's mean."""
        labels = batch["label"]
        return {
            feature: self.classifiers[feature](outputs["image"][feature], outputs["text"][feature], labels)
            for feature in present_features(outputs, self.context)
        }
