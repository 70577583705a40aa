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
from ssan.models.clip_trunks import ClipImageTrunk, ClipTextTrunk, resize_pos_embed
from ssan.models.layers import LEAKY_SLOPE, PartLinear
from ssan.models.relation import PartRelation
from ssan.models.similarity import TERMS, feature_terms, flatten_features, similarity
from ssan.models.ssan import SSAN
from ssan.models.text import TextEncoder, WordAttention, global_text_max
from ssan.models.text_encoders import TEXT_ENCODERS, build_text_encoder, register_text_encoder

__all__ = [
    "BACKBONES",
    "LEAKY_SLOPE",
    "TERMS",
    "TEXT_ENCODERS",
    "ArchitectureError",
    "Backbone",
    "ClipImageTrunk",
    "ClipTextTrunk",
    "PartLinear",
    "PartRelation",
    "PretrainedWeightsError",
    "ResNetTrunk",
    "SSAN",
    "SmallCNN",
    "TextEncoder",
    "WordAttention",
    "build_backbone",
    "build_text_encoder",
    "feature_terms",
    "flatten_features",
    "global_text_max",
    "load_trunk_weights",
    "register_backbone",
    "register_text_encoder",
    "resize_pos_embed",
    "resnet_trunk",
    "similarity",
]
