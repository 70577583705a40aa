"""ONNX export of SSAN on CLIP trunks: the model's own encoders, with a traceable self-attention.

The CLIP trunks have no packed LSTM, so ``encode_image`` / ``encode_text`` export as they are,
except ``nn.MultiheadAttention``: traced with a causal mask, its internal reshapes keep the
tracing caption length as a constant. The export therefore runs on a copy of the model whose
attention layers are :class:`TraceableSelfAttention` (the same weights, the same arithmetic,
shapes taken from the inputs), and the parity check compares that graph with the original model.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class TraceableSelfAttention(nn.Module):
    """``nn.MultiheadAttention(batch_first=True)`` self-attention without fixed sizes in its graph.

    Args:
        attention: the layer whose weights it uses (not copied).
    """

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention.batch_first or attention.in_proj_weight is None:
            raise ValueError("expected a batch-first attention layer with a packed input projection")
        self.attention = attention
        self.heads = attention.num_heads
        self.head_dim = attention.embed_dim // attention.num_heads

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None) -> Tuple[torch.Tensor, None]:
        """B x L x E -> (B x L x E, None); ``key`` / ``value`` must be ``query`` (self-attention)."""
        layer = self.attention
        q, k, v = F.linear(query, layer.in_proj_weight, layer.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2) for x in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(-2)
        return layer.out_proj(out), None


def traceable_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every batch-first ``nn.MultiheadAttention`` made traceable."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, TraceableSelfAttention(child))
    return model


class ExportFeatures(nn.Module):
    """One side of an SSAN model as a graph with its features as a tuple.

    Args:
        model: an SSAN with CLIP trunks (already a :func:`traceable_copy`).
        side: ``image`` (``encode_image``) or ``text`` (``encode_text`` with the WAM attention).
        names: the feature names to return, in order.
    """

    def __init__(self, model: nn.Module, side: str, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.side, self.names = model, side, list(names)

    def forward(self, *inputs) -> Tuple[torch.Tensor, ...]:
        if self.side == "image":
            feats = self.model.encode_image(*inputs)
        else:
            feats = self.model.encode_text(*inputs, return_attention=True)
        return tuple(feats[name] for name in self.names)
