"""Text encoders, one registry: the paper's Bi-LSTM (``lstm``, the default) and the CLIP text transformer.

A text encoder maps ``tokens`` (B x L ids, 0-padded) and ``lengths`` (B, CPU) to a dict:

- ``"part"``: B x L x C word features, which WAM pools into the K part features (C = ``hidden_dim``);
- ``"mask"``: B x L bool, True at real tokens;
- either ``"global"``: B x L x C word features that SSAN max-pools and projects with ``W_g``
  (shared with the image map), or ``"pooled"``: the finished B x D global feature (the CLIP
  text transformer's EOT token), when the entry has ``pooled=True``.

``tokenizer`` names how captions become ids: ``vocab`` (the prepared vocabulary) or ``clip``
(CLIP's byte-pair encoding, see :mod:`ssan.data.tokenizers`). Add one from user code with
:func:`register_text_encoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ssan.config import ModelConfig
from ssan.models.backbones import ArchitectureError
from ssan.models.text import TextEncoder
from ssan.registry import Registry


@dataclass(frozen=True)
class TextEncoderEntry:
    """A registered text encoder.

    build: ``build(config, vocab_size) -> nn.Module`` (the contract of the module docstring).
    pooled: the module returns its own global feature (``"pooled"``) instead of word features.
    tokenizer: ``vocab`` | ``clip``.
    """

    build: Callable[[ModelConfig, int], nn.Module]
    pooled: bool = False
    tokenizer: str = "vocab"


TEXT_ENCODERS: Registry[TextEncoderEntry] = Registry("text encoder", ArchitectureError)


def register_text_encoder(name: str, *, pooled: bool = False, tokenizer: str = "vocab", overwrite: bool = False):
    """Decorator registering ``build(config, vocab_size) -> nn.Module`` as text encoder ``name``."""

    def decorate(build: Callable[[ModelConfig, int], nn.Module]):
        TEXT_ENCODERS.register(name, TextEncoderEntry(build, pooled, tokenizer), overwrite=overwrite)
        return build

    return decorate


@register_text_encoder("lstm")
def _lstm(config: ModelConfig, vocab_size: int) -> nn.Module:
    return TextEncoder(vocab_size, config.word_dim, config.hidden_dim, config.dropout, config.parts)


def build_text_encoder(config: ModelConfig, vocab_size: int) -> nn.Module:
    """The text encoder ``config.text_encoder``."""
    return TEXT_ENCODERS.get(config.text_encoder).build(config, vocab_size)
