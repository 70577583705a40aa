"""SSAN training objective: loss terms (identity, compound ranking; InfoNCE, sdm extensions), the criterion."""

from ssan.losses.contrastive import InfoNCETerm, multi_positive_info_nce
from ssan.losses.criterion import SSANCriterion, build_criterion
from ssan.losses.identity import IdentityLoss, IdentityTerm
from ssan.losses.ranking import (
    CompoundRankingTerm,
    bidirectional_hinge,
    compound_ranking_loss,
    cosine_matrix,
    semi_hard_hinge,
    weak_margins,
)
from ssan.losses.sdm import SDMTerm, sdm_loss
from ssan.losses.terms import LOSS_TERMS, LossContext, LossTerm, StepInputs, register_loss_term

__all__ = [
    "LOSS_TERMS",
    "CompoundRankingTerm",
    "IdentityLoss",
    "IdentityTerm",
    "InfoNCETerm",
    "LossContext",
    "LossTerm",
    "SDMTerm",
    "SSANCriterion",
    "StepInputs",
    "bidirectional_hinge",
    "build_criterion",
    "compound_ranking_loss",
    "cosine_matrix",
    "multi_positive_info_nce",
    "register_loss_term",
    "sdm_loss",
    "semi_hard_hinge",
    "weak_margins",
]
