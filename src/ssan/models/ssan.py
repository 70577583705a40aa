"""The SSAN model: image and text encoders with shared projections (method section 2)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ssan.config import ModelConfig
from ssan.models.backbones import BACKBONES, ArchitectureError, build_backbone
from ssan.models.layers import LEAKY_SLOPE, PartLinear, is_tracing, kaiming_fan_out_, stripe_max
from ssan.models.relation import RELATION_NORMS, PartRelation
from ssan.models.text import WordAttention, as_cpu_lengths, global_text_max
from ssan.models.text_encoders import TEXT_ENCODERS, build_text_encoder

log = logging.getLogger(__name__)


class SSAN(nn.Module):
    """Semantically Self-Aligned Network; the defaults are the paper's architecture.

    Args:
        vocab_size: embedding rows including padding id 0.
        config: the architecture, a :class:`ssan.config.ModelConfig` (its fields are
            documented there: backbone, pretrained, num_parts, embed_dim, word_dim,
            hidden_dim, dropout, parts, cnn_width, relation_norm, text_encoder, clip_model).
        **fields: any of those fields, overriding ``config`` (``SSAN(5000, backbone="small")``).

    ``model.arch`` holds ``vocab_size`` and the config's fields as plain data, with
    ``pretrained`` recorded as False: the weights then come from a checkpoint, so
    ``SSAN(**arch)`` never needs the original weights file or the network.
    """

    def __init__(self, vocab_size: int, config: Optional[ModelConfig] = None, **fields) -> None:
        super().__init__()
        config = _resolve_config(config, fields)
        _check_arguments(vocab_size, config)
        self.config = config
        self.arch = {"vocab_size": vocab_size, **dataclasses.asdict(config), "pretrained": False}
        self.num_parts = config.num_parts
        self.parts = config.parts
        hidden, embed = config.hidden_dim, config.embed_dim
        self.pooled = _pooled_trunks(config)
        self.backbone = build_backbone(config)
        self.text_encoder = build_text_encoder(config, vocab_size)
        if not self.pooled:  # trunks with their own global features (CLIP's) need no W_g
            self.global_proj = nn.Linear(hidden, embed, bias=False)  # W_g, shared by both modalities
            kaiming_fan_out_(self.global_proj.weight)
        if config.parts:
            self.part_proj = PartLinear(config.num_parts, hidden, embed)  # W_k, shared by both modalities
            self.word_attention = WordAttention(hidden, config.num_parts)
            self.relation = PartRelation(config.num_parts, embed, config.relation_norm)

    @classmethod
    def from_arch(cls, arch: dict) -> SSAN:
        """Rebuild from ``model.arch`` (see :func:`normalise_arch` for archs of older versions)."""
        return cls(**normalise_arch(arch))

    def encode_image(self, images: torch.Tensor) -> dict:
        """images: B x 3 x H x W -> {"global": B x D, "parts": B x K x D, "relation": B x K x D/2}."""
        fmap = self.backbone(images)
        if self.pooled:  # the trunk's own global feature (a CLIP ViT's class token)
            fmap, out = fmap["map"], {"global": fmap["pooled"]}
        else:
            out = {"global": self.global_proj(fmap.amax(dim=(2, 3)))}  # global max pool
        if self.parts:
            self._add_part_terms(out, self.part_proj(stripe_max(fmap, self.num_parts)))  # B x K x C stripes
        return out

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor, return_attention: bool = False) -> dict:
        """tokens: B x L ids (0-padded); lengths: B real lengths (kept on the CPU).

        Returns the keys of :meth:`encode_image`, plus ``"attention"`` (B x L x K WAM
        scores, 0 at padding) when ``return_attention`` and the part branch exists.
        """
        full_length = tokens.size(1)
        if not is_tracing():
            lengths = as_cpu_lengths(lengths, full_length)
            tokens = tokens[:, : int(lengths.max())]  # columns past every caption change nothing
        words = self.text_encoder(tokens, lengths)
        if self.pooled:  # the encoder's own global feature (CLIP's EOT token)
            out = {"global": words["pooled"]}
        else:
            out = {"global": self.global_proj(global_text_max(words["global"], words["mask"]))}
        if self.parts:
            part_words, attention = self.word_attention(words["part"], words["mask"])
            self._add_part_terms(out, self.part_proj(part_words))
            if return_attention:
                out["attention"] = F.pad(attention, (0, 0, 0, full_length - tokens.size(1)))
        return out

    def _add_part_terms(self, out: dict, parts: torch.Tensor) -> None:
        parts = F.leaky_relu(parts, LEAKY_SLOPE)
        out["parts"] = parts
        out["relation"] = self.relation(parts)

    def forward(self, batch: dict) -> dict:
        """Encode a training batch: ``{"image": feats, "text": feats, "weak_text": feats}``.

        ``weak_text`` is present when the batch has ``weak_tokens``/``weak_lengths``.
        """
        out = {"image": self.encode_image(batch["image"]), "text": self.encode_text(batch["tokens"], batch["lengths"])}
        if "weak_tokens" in batch:
            out["weak_text"] = self.encode_text(batch["weak_tokens"], batch["weak_lengths"])
        return out


def normalise_arch(arch: dict) -> dict:
    """``arch`` with the fields that older versions did not record filled in as those versions built them.

    An arch without ``relation_norm`` comes from a model with the pooled relation BatchNorm
    (``shared``): it loads as such, and resuming it with the per-part default is refused.
    """
    arch = dict(arch)
    arch.setdefault("relation_norm", "shared")
    arch.setdefault("text_encoder", "lstm")
    arch.setdefault("clip_model", ModelConfig.clip_model)
    return arch


def _pooled_trunks(config: ModelConfig) -> bool:
    """Whether both trunks give their own global features (CLIP's); a mixed pair is refused."""
    image, text = BACKBONES.get(config.backbone).pooled, TEXT_ENCODERS.get(config.text_encoder).pooled
    if image != text:
        own = config.backbone if image else config.text_encoder
        raise ArchitectureError(
            f"{own} gives its own global feature but the other trunk does not "
            f"(backbone {config.backbone}, text_encoder {config.text_encoder}): pair clip-vit with clip"
        )
    return image


def _resolve_config(config: Optional[ModelConfig], fields: dict) -> ModelConfig:
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ArchitectureError(f"unknown model argument {unknown[0]!r}; valid: vocab_size, {', '.join(sorted(known))}")
    return dataclasses.replace(config or ModelConfig(), **fields)


def _check_arguments(vocab_size: int, config: ModelConfig) -> None:
    if vocab_size < 2:
        raise ArchitectureError(f"vocab_size must be at least 2 (padding plus one word), got {vocab_size}")
    if config.embed_dim < 2 or config.embed_dim % 2:
        raise ArchitectureError(f"embed_dim must be even (relation features are embed_dim/2), got {config.embed_dim}")
    if config.parts and config.num_parts < 2:
        raise ArchitectureError(f"num_parts must be at least 2 for the part relation module, got {config.num_parts}")
    if config.relation_norm not in RELATION_NORMS:
        raise ArchitectureError(f"unknown relation_norm {config.relation_norm!r}; valid: {', '.join(RELATION_NORMS)}")
