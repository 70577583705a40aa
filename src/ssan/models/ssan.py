"""The SSAN model: image and text encoders with shared projections (method section 2)."""

from __future__ import annotations

import logging
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from ssan.models.backbones import ArchitectureError, build_backbone
from ssan.models.layers import LEAKY_SLOPE, PartLinear, is_tracing, kaiming_fan_out_
from ssan.models.relation import PartRelation
from ssan.models.text import TextEncoder, WordAttention, as_cpu_lengths, global_text_max

log = logging.getLogger(__name__)


class SSAN(nn.Module):
    """Semantically Self-Aligned Network; the defaults are the paper's architecture.

    Args:
        vocab_size: embedding rows including padding id 0.
        num_parts: K, horizontal stripes / text parts.
        embed_dim: D, width of global and part features (relation features are D/2).
        word_dim: embedding width.
        hidden_dim: LSTM hidden width C; must equal the backbone's channels
            (2048 for resnet50, 512 for resnet18; the ``small`` backbone outputs hidden_dim).
        backbone: ``resnet50`` | ``resnet18`` | ``small``.
        pretrained: False, True (torchvision ImageNet weights) or a local weights path.
        parts: False builds the global-only ablation (no parts, WAM or relation module).
        dropout: dropout on the word embeddings.
        cnn_width: base width of the ``small`` backbone.

    ``model.arch`` holds these arguments as plain data, with ``pretrained`` recorded as
    False: the weights then come from a checkpoint, so ``SSAN(**arch)`` never needs the
    original weights file or the network.
    """

    def __init__(self, vocab_size: int, num_parts: int = 6, embed_dim: int = 1024, word_dim: int = 512,
                 hidden_dim: int = 2048, backbone: str = "resnet50", pretrained: Union[bool, str] = False,
                 parts: bool = True, dropout: float = 0.3, cnn_width: int = 32) -> None:
        super().__init__()
        _check_arguments(vocab_size, num_parts, embed_dim, parts)
        self.arch = {"vocab_size": vocab_size, "num_parts": num_parts, "embed_dim": embed_dim,
                     "word_dim": word_dim, "hidden_dim": hidden_dim, "backbone": backbone,
                     "pretrained": False, "parts": parts, "dropout": dropout, "cnn_width": cnn_width}
        self.num_parts = num_parts
        self.parts = parts
        self.backbone = build_backbone(backbone, hidden_dim, pretrained, cnn_width)
        self.text_encoder = TextEncoder(vocab_size, word_dim, hidden_dim, dropout, parts)
        self.global_proj = nn.Linear(hidden_dim, embed_dim, bias=False)  # W_g, shared by both modalities
        kaiming_fan_out_(self.global_proj.weight)
        if parts:
            self.part_proj = PartLinear(num_parts, hidden_dim, embed_dim)  # W_k, shared by both modalities
            self.word_attention = WordAttention(hidden_dim, num_parts)
            self.relation = PartRelation(num_parts, embed_dim)

    def encode_image(self, images: torch.Tensor) -> dict:
        """images: B x 3 x H x W -> {"global": B x D, "parts": B x K x D, "relation": B x K x D/2}."""
        fmap = self.backbone(images)
        out = {"global": self.global_proj(F.adaptive_max_pool2d(fmap, 1).flatten(1))}
        if self.parts:
            stripes = F.adaptive_max_pool2d(fmap, (self.num_parts, 1)).flatten(2).transpose(1, 2)  # B x K x C
            self._add_part_terms(out, self.part_proj(stripes))
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
        out = {"image": self.encode_image(batch["image"]),
               "text": self.encode_text(batch["tokens"], batch["lengths"])}
        if "weak_tokens" in batch:
            out["weak_text"] = self.encode_text(batch["weak_tokens"], batch["weak_lengths"])
        return out

    def backbone_parameters(self) -> list:
        """Parameters of the image backbone (the pretrained part, trained at a lower rate)."""
        return list(self.backbone.parameters())

    def head_parameters(self) -> list:
        """Every parameter outside the image backbone (the new layers)."""
        backbone = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone]


def _check_arguments(vocab_size: int, num_parts: int, embed_dim: int, parts: bool) -> None:
    if vocab_size < 2:
        raise ArchitectureError(f"vocab_size must be at least 2 (padding plus one word), got {vocab_size}")
    if embed_dim < 2 or embed_dim % 2:
        raise ArchitectureError(f"embed_dim must be even (relation features are embed_dim/2), got {embed_dim}")
    if parts and num_parts < 2:
        raise ArchitectureError(f"num_parts must be at least 2 for the part relation module, got {num_parts}")
