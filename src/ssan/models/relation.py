"""Part relation module (the paper's multi-view non-local network), shared by both modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssan.errors import ConfigError
from ssan.models.layers import LEAKY_SLOPE, PartLinear

RELATION_NORMS = ("per_part", "shared")
_MASKED = -1e6  # score of a part against itself (the reference's constant; the scores are fp32)


class BatchSizeError(ConfigError, ValueError):
    """Training the per-part BatchNorm on a batch of one sample (its statistics need two)."""


class PartRelation(nn.Module):
    """Relate each part to the other parts; input ``B x K x D``, output ``B x K x D/2``.

    Method section 2, steps 1-8, per part k (all projections bias-free, one weight per part):
    p_k = LReLU(P_k x_k), c_k = LReLU(Q_k x_k) (D -> D/2), both L2-normalised;
    A[j, k] = p_j . c_k with the diagonal masked; a_jk = softmax_j A[j, k];
    z_k = sum_j a_jk p_j; u_k = LReLU(BN_k(U_k z_k)) (D/2 -> D); r_k = O_k (x_k + u_k) (D -> D/2).

    ``norm="per_part"`` (the reference): one BatchNorm per part, with its own running
    statistics and scale/shift over the batch only, as one ``BatchNorm1d(K * D)`` over the
    flattened parts (channel ``k * D + d`` is BN_k's channel d). It cannot train on a single
    sample (:class:`BatchSizeError`); inference at batch size 1 works. ``norm="shared"``
    pools one ``BatchNorm1d(D)`` over batch and parts (trains at batch size 1, but is not the
    reference's module: train-mode relation features differ by about 15 %).

    The 6 x 6 part scores and their softmax are computed in float32 even under autocast,
    so the mask constant never overflows a half-precision type.

    Args:
        num_parts: K (>= 2: a part never attends to itself).
        dim: D (even).
        norm: ``per_part`` | ``shared``.
    """

    def __init__(self, num_parts: int, dim: int, norm: str = "per_part") -> None:
        super().__init__()
        if norm not in RELATION_NORMS:
            raise ConfigError(f"unknown relation norm {norm!r}; valid: {', '.join(RELATION_NORMS)}")
        half = dim // 2
        self.norm_kind = norm
        self.part_proj = PartLinear(num_parts, dim, half)  # P_k
        self.context_proj = PartLinear(num_parts, dim, half)  # Q_k
        self.up_proj = PartLinear(num_parts, half, dim)  # U_k
        self.norm = nn.BatchNorm1d(num_parts * dim if norm == "per_part" else dim)
        self.out_proj = PartLinear(num_parts, dim, half)  # O_k
        self.register_buffer("self_mask", torch.eye(num_parts, dtype=torch.bool), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x K x D part features -> B x K x D/2 relation features."""
        p = F.normalize(F.leaky_relu(self.part_proj(x), LEAKY_SLOPE), dim=-1)
        c = F.normalize(F.leaky_relu(self.context_proj(x), LEAKY_SLOPE), dim=-1)
        with torch.autocast(x.device.type, enabled=False):
            scores = torch.bmm(p.float(), c.float().transpose(1, 2)).masked_fill(self.self_mask, _MASKED)
            weights = scores.softmax(dim=1).to(p.dtype)  # B x K(j) x K(k), columns sum to 1
        z = torch.bmm(weights.transpose(1, 2), p)  # z_k = sum_j a_jk p_j: B x K x D/2
        u = self._normalise(self.up_proj(z))
        return self.out_proj(x + F.leaky_relu(u, LEAKY_SLOPE))

    def _normalise(self, u: torch.Tensor) -> torch.Tensor:
        """BatchNorm of u: B x K x D, per part or pooled over the parts."""
        batch, parts, dim = u.shape
        if self.norm_kind == "shared":
            return self.norm(u.transpose(1, 2)).transpose(1, 2)
        if self.training and batch == 1:
            raise BatchSizeError(
                "the relation module's per-part BatchNorm cannot train on a batch of 1 sample; use a "
                "batch of at least 2 per process, or model.relation_norm=shared (not the reference's module)"
            )
        return self.norm(u.reshape(batch, parts * dim)).view(batch, parts, dim)

    def extra_repr(self) -> str:
        return f"norm={self.norm_kind}"
