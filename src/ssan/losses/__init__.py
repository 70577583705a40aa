"""SSAN training objective: identity loss, compound ranking loss, InfoNCE extension, criterion."""

from ssan.losses.contrastive import ContrastiveLoss, multi_positive_info_nce
from ssan.losses.criterion import SSANCriterion
from ssan.losses.identity import IdentityLoss
from ssan.losses.ranking import (
    CompoundRankingLoss,
    bidirectional_hinge,
    compound_ranking_loss,
    cosine_matrix,
    semi_hard_hinge,
    weak_margins,
)

__all__ = [
    "CompoundRankingLoss",
    "ContrastiveLoss",
    "IdentityLoss",
    "SSANCriterion",
    "bidirectional_hinge",
    "compound_ranking_loss",
    "cosine_matrix",
    "multi_positive_info_nce",
    "semi_hard_hinge",
    "weak_margins",
]
