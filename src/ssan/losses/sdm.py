"""Similarity distribution matching (IRRA's ``sdm``): an extension for the CLIP-era recipe.

On the global features of the (gathered) batch, with s_ij = cos(v_i, t_j) / tau:
p_i = softmax_j(s_ij), q_ij = y_ij / sum_k y_ik (y_ij = 1 when images i and caption j share an
identity), L_i2t = mean_i sum_j p_ij (log p_ij - log(q_ij + eps)); L_t2i the same on s
transposed; L_sdm = L_i2t + L_t2i (``docs/ssan-clip.md``; IRRA, Jiang and Ye, CVPR 2023).
"""

from __future__ import annotations

from typing import Dict

import torch

from ssan.errors import ConfigError
from ssan.losses.ranking import cosine_matrix
from ssan.losses.terms import LossContext, LossTerm, StepInputs, register_loss_term

EPSILON = 1e-8  # IRRA's epsilon inside log(q + eps)


def sdm_loss(sim: torch.Tensor, labels: torch.Tensor, tau: float = 0.02) -> torch.Tensor:
    """sim: B x B cosines (image rows, text columns); labels: B identity labels. Returns L_i2t + L_t2i.

    Each direction is the KL divergence of the label distribution q from the similarity
    distribution p, summed over the row and averaged over the anchors.
    """
    labels = labels.to(sim.device)
    same = (labels[:, None] == labels[None, :]).to(sim.dtype)
    target_log = torch.log(same / same.sum(dim=1, keepdim=True) + EPSILON)

    def direction(scores: torch.Tensor) -> torch.Tensor:
        log_p = (scores / tau).log_softmax(dim=1)
        return (log_p.exp() * (log_p - target_log)).sum(dim=1).mean()

    return direction(sim) + direction(sim.T)


@register_loss_term("sdm")
class SDMTerm(LossTerm):
    """IRRA's similarity distribution matching on the global features of the global batch.

    Args:
        context: the :class:`LossContext`.
        tau: the fixed temperature (IRRA: 0.02, a logit scale of 50).
    """

    def __init__(self, context: LossContext, tau: float = 0.02) -> None:
        super().__init__(context)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or tau <= 0:
            raise ConfigError(f"loss term sdm: tau must be a positive number, got {tau!r}")
        self.tau = float(tau)

    def forward(self, outputs: dict, batch: dict, step: StepInputs) -> Dict[str, torch.Tensor]:
        image = step.gather(outputs["image"]["global"])
        text = step.gather(outputs["text"]["global"])
        return {"global": sdm_loss(cosine_matrix(image, text), step.gather(batch["label"]), self.tau)}

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
