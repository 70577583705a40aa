"""SSAN networks: backbones, text encoder + WAM, part relation module, the model, similarity."""

from ssan.models.backbones import (
    BACKBONES,
    ArchitectureError,
    Backbone,
    PretrainedWeightsError,
    ResNetTrunk,
    SmallCNN,
    build_backbone,
    load_trunk_weights,
    register_backbone,
    resnet_trunk,
)
from ssan.models.layers import LEAKY_SLOPE, PartLinear
from ssan.models.relation import PartRelation
from ssan.models.similarity import TERMS, feature_terms, flatten_features, similarity
from ssan.models.ssan import SSAN
from ssan.models.text import TextEncoder, WordAttention, global_text_max

__all__ = [
    "BACKBONES",
    "LEAKY_SLOPE",
    "TERMS",
    "ArchitectureError",
    "Backbone",
    "PartLinear",
    "PartRelation",
    "PretrainedWeightsError",
    "ResNetTrunk",
    "SSAN",
    "SmallCNN",
    "TextEncoder",
    "WordAttention",
    "build_backbone",
    "feature_terms",
    "flatten_features",
    "global_text_max",
    "load_trunk_weights",
    "register_backbone",
    "resnet_trunk",
    "similarity",
]
