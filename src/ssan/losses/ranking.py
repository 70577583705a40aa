"""Compound ranking (CR) loss with random semi-hard negatives (method section 4).

Conventions: ``sim[i, j] = cos(image_i, text_j)``; the positive of anchor i is the
diagonal. Image anchors read rows (negatives are texts), text anchors read columns
(negatives are images). A negative must have a *different identity*; same-identity
non-pairs are ignored. Among the semi-hard negatives, S_ap - margin < S_an < S_ap,
ONE is drawn uniformly at random per anchor; an anchor without one contributes
nothing. Hinge terms max(0, margin - S_ap + S_an) are summed over anchors and directions.
When no anchor of a direction has a semi-hard negative, the reference still adds one
triplet (the last anchor, its positive and its first other-identity candidate in batch
order, at that anchor's margin); so do we (:func:`_fallback_hinge`).

Weak term: the same mining on ``weak_sim[i, j] = cos(image_i, weak_text_j)``. Its margin
is margin/2 for epochs < ``weak_warmup_epochs``; afterwards pair i gets
mu_i = min(|S(I_i, T'_i)| / |S(I_i, T_i)|, 1) (detached) and margin'_i = (mu_i + 1) * margin / 2,
and pairs with margin'_i < ``weak_skip`` are skipped. The pair's margin is used in both
directions: the image anchor I_i and the text anchor T'_i both use margin'_i (and both
are skipped together). mu is clipped at 1 as intended (the reference's off-by-one lets it
reach 2).
"""

from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from ssan.losses.terms import LossContext, LossTerm, StepInputs, present_features, register_loss_term


def cosine_matrix(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """image: B x ..., text: B' x ... -> B x B' cosines of the flattened features.

    Computed in float32 even under autocast, so semi-hard mining and temperatures see
    full-precision similarities.
    """
    with torch.autocast(image.device.type, enabled=False):
        image = F.normalize(image.flatten(1).float(), dim=1)
        return image @ F.normalize(text.flatten(1).float(), dim=1).T


def _uniform_pick(candidates: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Index of one True entry per row, uniformly at random (arbitrary for empty rows)."""
    device = generator.device if generator is not None else candidates.device
    noise = torch.rand(candidates.shape, generator=generator, device=device).to(candidates.device)
    return noise.masked_fill(~candidates, -1.0).argmax(dim=1)


def _fallback_hinge(
    sim: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor, active: Optional[torch.Tensor]
) -> torch.Tensor:
    """The reference's triplet for a direction in which no anchor found a semi-hard negative.

    Reference ``RankingLoss.get_triplets``: when its loop over anchors collected no triplet it
    appends ``[idx, idx, negative[0]]`` with the loop's final values: the last anchor of the
    batch, its positive, and the first candidate (in batch order) whose identity differs from
    that of the last anchor the loop examined (the last *active* one; with every anchor active,
    the last anchor itself), at the last anchor's margin. Computed without a host sync; zero
    when the reference would have crashed instead (no active anchor, or no other identity).
    """
    size = sim.size(0)
    positions = torch.arange(size, device=sim.device)
    examined = positions if active is None else torch.where(active, positions, -1)
    last_examined = examined.max().reshape(1)  # 1-element index tensors: indexing with 0-dim ones reads the host
    other = labels != labels.index_select(0, last_examined.clamp_min(0))
    negative = other.to(torch.uint8).argmax().reshape(1)  # first True
    valid = other.any() & (last_examined[0] >= 0)
    last = size - 1
    hinge = (margins[last] - sim[last, last] + sim[last].index_select(0, negative)[0]).clamp_min(0.0)
    return torch.where(valid, hinge, torch.zeros_like(hinge))


def _per_anchor(margins: Union[float, torch.Tensor], sim: torch.Tensor) -> torch.Tensor:
    """B margins on ``sim``'s device: a float is filled there (``torch.as_tensor(0.2, device=cuda)``
    would be a blocking host-to-device copy at every step)."""
    if torch.is_tensor(margins):
        return margins.to(sim.dtype).expand(sim.size(0))
    return torch.full((sim.size(0),), float(margins), dtype=sim.dtype, device=sim.device)


def semi_hard_hinge(
    sim: torch.Tensor,
    labels: torch.Tensor,
    margins: Union[float, torch.Tensor],
    active: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Summed hinge over row anchors, one random semi-hard negative each.

    Args:
        sim: B x B, ``sim[a, n]``: anchor a against candidate n; the positive is ``sim[a, a]``.
        labels: B identity labels (candidates of the anchor's identity are never negatives).
        margins: scalar or B per-anchor margins.
        active: optional B bool; inactive anchors contribute nothing.
        generator: optional torch generator for the random choice.

    Returns:
        Scalar: sum over anchors with a semi-hard negative of margin - S_ap + S_an; when no
        anchor has one, the reference's single fallback triplet (:func:`_fallback_hinge`).
    """
    margins = _per_anchor(margins, sim)
    labels = labels.to(sim.device)
    scores = sim.detach()
    positive = scores.diagonal()[:, None]
    candidates = (labels[:, None] != labels[None, :]) & (scores > positive - margins[:, None]) & (scores < positive)
    if active is not None:
        active = active.to(sim.device)
        candidates = candidates & active[:, None]
    has_negative = candidates.any(dim=1)
    chosen = _uniform_pick(candidates, generator)
    anchors = torch.arange(sim.size(0), device=sim.device)
    hinge = (margins - sim.diagonal() + sim[anchors, chosen]).clamp_min(0.0)
    mined = (hinge * has_negative).sum()
    fallback = _fallback_hinge(sim, labels, margins, active)
    return torch.where(has_negative.any(), mined, mined + fallback)


def bidirectional_hinge(
    sim: torch.Tensor,
    labels: torch.Tensor,
    margins: Union[float, torch.Tensor],
    active: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Image-anchor (rows) plus text-anchor (columns) semi-hard hinge of ``sim`` (B x B)."""
    return semi_hard_hinge(sim, labels, margins, active, generator) + semi_hard_hinge(
        sim.T, labels, margins, active, generator
    )


def weak_margins(
    sim: torch.Tensor, weak_sim: torch.Tensor, margin: float, epoch: int, warmup_epochs: int, skip: float
) -> tuple:
    """Per-pair weak margins and the mask of pairs kept: ``(margins B, active B)``."""
    size = sim.size(0)
    if epoch < warmup_epochs:
        margins = torch.full((size,), margin / 2, dtype=sim.dtype, device=sim.device)
        return margins, torch.ones(size, dtype=torch.bool, device=sim.device)
    strong = sim.detach().diagonal().abs().clamp_min(1e-12)
    mu = (weak_sim.detach().diagonal().abs() / strong).clamp(max=1.0)
    margins = (mu + 1.0) * margin / 2
    return margins, margins >= skip


def compound_ranking_loss(
    sim: torch.Tensor,
    weak_sim: torch.Tensor,
    labels: torch.Tensor,
    epoch: int,
    margin: float = 0.2,
    beta: float = 0.1,
    weak_warmup_epochs: int = 5,
    weak_skip: float = 0.16,
    generator: Optional[torch.Generator] = None,
) -> dict:
    """CR loss on precomputed cosine matrices.

    Args:
        sim: B x B, ``cos(image_i, text_j)`` with the paired captions.
        weak_sim: B x B, ``cos(image_i, weak_text_j)`` with the weak-positive captions.
        labels: B identity labels.
        epoch: 0-based current epoch (drives the weak margin schedule).

    Returns:
        ``{"loss": strong + beta * weak, "strong": ..., "weak": ...}`` scalars.
    """
    strong = bidirectional_hinge(sim, labels, margin, generator=generator)
    margins, active = weak_margins(sim, weak_sim, margin, epoch, weak_warmup_epochs, weak_skip)
    weak = bidirectional_hinge(weak_sim, labels, margins, active, generator)
    return {"loss": strong + beta * weak, "strong": strong, "weak": weak}


@register_loss_term("cr")
class CompoundRankingTerm(LossTerm):
    """The compound ranking loss of each feature type, on the global batch.

    Args:
        context: the :class:`LossContext`.
        margin, beta, weak_warmup_epochs, weak_skip: see the module docstring.
    """

    def __init__(
        self,
        context: LossContext,
        margin: float = 0.2,
        beta: float = 0.1,
        weak_warmup_epochs: int = 5,
        weak_skip: float = 0.16,
    ) -> None:
        super().__init__(context)
        self.margin = margin
        self.beta = beta
        self.weak_warmup_epochs = weak_warmup_epochs
        self.weak_skip = weak_skip

    @classmethod
    def from_config(cls, context: LossContext, config, options: dict) -> CompoundRankingTerm:
        settings = {
            "margin": config.margin,
            "beta": config.beta,
            "weak_warmup_epochs": config.weak_warmup_epochs,
            "weak_skip": config.weak_skip,
            **options,
        }
        return super().from_config(context, config, settings)

    def forward(self, outputs: dict, batch: dict, step: StepInputs) -> Dict[str, torch.Tensor]:
        """Features and labels are gathered across processes first (identity in one process)."""
        labels = step.gather(batch["label"])
        losses = {}
        for feature in present_features(outputs, self.context):
            image, text, weak = (
                step.gather(outputs[key][feature].flatten(1)) for key in ("image", "text", "weak_text")
            )
            losses[feature] = compound_ranking_loss(
                cosine_matrix(image, text),
                cosine_matrix(image, weak),
                labels,
                step.epoch,
                self.margin,
                self.beta,
                self.weak_warmup_epochs,
                self.weak_skip,
                step.generator,
            )["loss"]
        return losses

    def extra_repr(self) -> str:
        return (
            f"margin={self.margin}, beta={self.beta}, weak_warmup_epochs={self.weak_warmup_epochs}, "
            f"weak_skip={self.weak_skip}"
        )
