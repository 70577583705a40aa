"""Part relation module (the paper's multi-view non-local network), shared by both modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssan.models.layers import LEAKY_SLOPE, PartLinear


class PartRelation(nn.Module):
    """Relate each part to the other parts; input ``B x K x D``, output ``B x K x D/2``.

    Method section 2, steps 1-8, per part k (all projections bias-free, one weight per part):
    p_k = LReLU(P_k x_k), c_k = LReLU(Q_k x_k) (D -> D/2), both L2-normalised;
    A[j, k] = p_j . c_k with the diagonal masked; a_jk = softmax_j A[j, k];
    z_k = sum_j a_jk p_j; u_k = LReLU(BN(U_k z_k)) (D/2 -> D); r_k = O_k (x_k + u_k) (D -> D/2).

    The BatchNorm is one ``BatchNorm1d(D)`` over the ``B x D x K`` map (statistics over
    batch and parts), so training works at batch size 1. (The reference keeps one BN per
    part, which cannot train on a single sample.)

    Args:
        num_parts: K (>= 2: a part never attends to itself).
        dim: D (even).
    """

    def __init__(self, num_parts: int, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.part_proj = PartLinear(num_parts, dim, half)  # P_k
        self.context_proj = PartLinear(num_parts, dim, half)  # Q_k
        self.up_proj = PartLinear(num_parts, half, dim)  # U_k
        self.norm = nn.BatchNorm1d(dim)
        self.out_proj = PartLinear(num_parts, dim, half)  # O_k
        self.register_buffer("self_mask", torch.eye(num_parts, dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x K x D part features -> B x K x D/2 relation features."""
        p = F.normalize(F.leaky_relu(self.part_proj(x), LEAKY_SLOPE), dim=-1)
        c = F.normalize(F.leaky_relu(self.context_proj(x), LEAKY_SLOPE), dim=-1)
        scores = torch.bmm(p, c.transpose(1, 2)).masked_fill(self.self_mask, -1e6)  # B x K(j) x K(k)
        weights = scores.softmax(dim=1)
        z = torch.bmm(weights.transpose(1, 2), p)  # z_k = sum_j a_jk p_j: B x K x D/2
        u = self.norm(self.up_proj(z).transpose(1, 2)).transpose(1, 2)
        return self.out_proj(x + F.leaky_relu(u, LEAKY_SLOPE))
