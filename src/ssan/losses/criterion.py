"""SSANCriterion: identity + compound ranking (+ optional InfoNCE) over every feature term."""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from ssan.losses.contrastive import ContrastiveLoss
from ssan.losses.identity import IdentityLoss
from ssan.losses.ranking import CompoundRankingLoss
from ssan.models.similarity import feature_terms

log = logging.getLogger(__name__)


class SSANCriterion(nn.Module):
    """The SSAN training objective (method section 4).

    total = id_weight * (ID_g + w (ID_p + ID_r)) + CR_g + w (CR_p + CR_r)
            + contrastive_weight * (NCE_g + w (NCE_p + NCE_r)),  w = part_weight.

    Holds the identity classifiers (training-only state, kept apart from the model);
    move it to the features' device with ``.to(device)``.

    Args:
        num_classes: number of training identities.
        num_parts: K.
        embed_dim: D (relation features are D/2).
        parts: False for the global-only ablation (global terms only).
        margin, beta, weak_warmup_epochs, weak_skip: compound ranking loss settings.
        part_weight: weight of the part and relation terms.
        id_weight: weight of the identity losses.
        contrastive_weight: weight of the InfoNCE extension (0 = off, the method).
        temperature: InfoNCE temperature.
    """

    def __init__(self, num_classes: int, num_parts: int, embed_dim: int, parts: bool = True, margin: float = 0.2,
                 beta: float = 0.1, weak_warmup_epochs: int = 5, weak_skip: float = 0.16, part_weight: float = 0.5,
                 id_weight: float = 1.0, contrastive_weight: float = 0.0, temperature: float = 0.05) -> None:
        super().__init__()
        self.term_weights = {"global": 1.0}
        self.identity = nn.ModuleDict({"global": IdentityLoss(num_classes, embed_dim, 1)})
        if parts:
            self.identity["parts"] = IdentityLoss(num_classes, embed_dim, num_parts)
            self.identity["relation"] = IdentityLoss(num_classes, embed_dim // 2, num_parts)
            self.term_weights.update(parts=part_weight, relation=part_weight)
        self.ranking = CompoundRankingLoss(margin, beta, weak_warmup_epochs, weak_skip)
        self.id_weight = id_weight
        self.contrastive_weight = contrastive_weight
        self.contrastive = ContrastiveLoss(temperature) if contrastive_weight > 0 else None

    def forward(self, image_feats: dict, text_feats: dict, weak_text_feats: dict, labels: torch.Tensor,
                epoch: int, generator: Optional[torch.Generator] = None) -> dict:
        """Loss terms for one batch.

        Args:
            image_feats, text_feats, weak_text_feats: feature dicts (B rows each) from the model.
            labels: B training labels (0..num_classes-1).
            epoch: 0-based current epoch (weak margin schedule).
            generator: optional generator for the random semi-hard negatives.

        Returns:
            ``{"id_<term>", "cr_<term>", ["nce_<term>"], "total"}`` scalar tensors, for each
            term of global / parts / relation that the criterion was built for.
        """
        terms = [t for t in feature_terms(image_feats) if t in self.identity]
        if "global" not in terms:
            raise ValueError("image features lack the 'global' term")
        labels = labels.to(image_feats["global"].device)
        out, total = {}, 0.0
        for term in terms:
            image, text, weak = image_feats[term], text_feats[term], weak_text_feats[term]
            out[f"id_{term}"] = self.identity[term](image, text, labels)
            out[f"cr_{term}"] = self.ranking(image, text, weak, labels, epoch, generator)["loss"]
            combined = self.id_weight * out[f"id_{term}"] + out[f"cr_{term}"]
            if self.contrastive is not None:
                out[f"nce_{term}"] = self.contrastive(image, text, labels)
                combined = combined + self.contrastive_weight * out[f"nce_{term}"]
            total = total + self.term_weights[term] * combined
        out["total"] = total
        return out
