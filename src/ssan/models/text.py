"""Text branch: word embeddings, the shared bidirectional LSTM and the Word Attention Module."""

from __future__ import annotations

import contextlib
from typing import Union

import torch
from torch import nn

from ssan.models._word_max import word_max
from ssan.models.layers import is_tracing


def as_cpu_lengths(lengths: Union[torch.Tensor, list], max_length: int) -> torch.Tensor:
    """Caption lengths as a CPU int64 tensor, checked to lie in 1..max_length."""
    lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
    if lengths.dim() != 1 or lengths.numel() == 0:
        raise ValueError(f"lengths must be a non-empty 1-D tensor, got shape {tuple(lengths.shape)}")
    if int(lengths.min()) < 1 or int(lengths.max()) > max_length:
        raise ValueError(
            f"caption lengths must lie in 1..{max_length} (token columns), got "
            f"{int(lengths.min())}..{int(lengths.max())}"
        )
    return lengths


def length_mask(lengths: torch.Tensor, max_length: int, device: torch.device) -> torch.Tensor:
    """B x max_length bool mask, True at real words.

    The lengths go to ``device`` with a non-blocking copy: a blocking one would make the host
    wait for everything queued before it (in training, the whole image forward).
    """
    positions = torch.arange(max_length, device=device)
    return positions[None, :] < lengths.to(device, non_blocking=True)[:, None]


class TextEncoder(nn.Module):
    """Embedding tables (global path, part path) and ONE bidirectional LSTM shared by both.

    Each word's feature is the mean of the forward and backward LSTM states, so it is
    ``hidden_dim`` wide, like the image channels. Paper widths with a 5,000-word table:
    2 x 5000 x 512 + 2 x 4 x 2048 x (512 + 2048) = 47,063,040 parameters.

    The LSTM runs on the zero-padded batch rather than on a PackedSequence, with the same
    result: it has no bias, so from a zero state a zero input keeps the state exactly zero,
    and the backward direction enters each caption's last real word from a zero state, as
    packing would give; forward-direction outputs past a caption's end are zeroed. This
    lets CPUs use the fused oneDNN LSTM kernel (its backward is 2-4x faster than packed
    sequences' per-step path here) and keeps the graph free of packing for export.

    Args:
        vocab_size: table rows including padding id 0.
        word_dim: embedding width.
        hidden_dim: LSTM hidden width (C).
        dropout: dropout on the embeddings.
        parts: build the part-path table (False for the global-only ablation).
    """

    def __init__(
        self, vocab_size: int, word_dim: int, hidden_dim: int, dropout: float = 0.3, parts: bool = True
    ) -> None:
        super().__init__()
        self.global_embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        self.part_embedding = nn.Embedding(vocab_size, word_dim, padding_idx=0) if parts else None
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(word_dim, hidden_dim, num_layers=1, bias=False, batch_first=True, bidirectional=True)
        self.hidden_dim = hidden_dim

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        """tokens: B x L ids; lengths: B (CPU, each in 1..L); ids past a caption's end are ignored.

        Returns ``{"global": B x L x C, "part": B x L x C (when built), "mask": B x L bool}``;
        word features are 0 at padding.
        """
        if not is_tracing():  # recorded graphs take lengths as a tensor input, unchecked
            lengths = as_cpu_lengths(lengths, tokens.size(1))
        mask = length_mask(lengths, tokens.size(1), tokens.device)
        tables = [self.global_embedding] + ([self.part_embedding] if self.part_embedding is not None else [])
        embedded = torch.cat([table(tokens) for table in tables], dim=0)  # both paths in one LSTM call
        path_mask = mask.repeat(len(tables), 1)[..., None]
        embedded = self.dropout(embedded) * path_mask
        with _lstm_autocast(embedded):
            states = self.lstm(_lstm_input(embedded))[0] * path_mask
        words = states.view(states.size(0), states.size(1), 2, self.hidden_dim).mean(dim=2)
        chunks = words.chunk(len(tables), dim=0)
        out = {"global": chunks[0], "mask": mask}
        if self.part_embedding is not None:
            out["part"] = chunks[1]
        return out


def _lstm_in_fp32(x: torch.Tensor) -> bool:
    """Whether the LSTM must leave autocast and run in float32 on ``x``'s device.

    CUDA: autocast sends the cuDNN RNN through ``_cudnn_rnn_cast_reflatten``, which casts to
    float16 whatever the autocast dtype (``at::kHalf`` hard-coded in ATen's AutocastRNN.cpp), so a
    bf16 run would get unscaled fp16 LSTM gradients. CPU fp16: oneDNN has no fp16 LSTM. (CPU bf16
    autocast runs oneDNN's bf16 LSTM, which honours the dtype.)
    """
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return False
    return device == "cuda" or torch.get_autocast_dtype(device) == torch.float16


def _lstm_autocast(x: torch.Tensor):
    return torch.autocast(x.device.type, enabled=False) if _lstm_in_fp32(x) else contextlib.nullcontext()


def _lstm_input(x: torch.Tensor) -> torch.Tensor:
    return x.float() if _lstm_in_fp32(x) else x


def global_text_max(words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over word positions with the reference's zero-padding semantics.

    words: B x L x C, mask: B x L. Returns max(0, max over real words): B x C, the same
    for a caption whatever padding its batch adds.
    """
    return words.masked_fill(~mask[..., None], 0.0).max(dim=1).values.clamp_min(0.0)


class WordAttention(nn.Module):
    """Word Attention Module, batched with masks (no loop over samples or parts).

    The max over words runs in cache-sized blocks of word positions with a gather/scatter
    backward (see ``ssan.models._word_max``) instead of building the B x L x K x C product.

    s_ik = sigmoid(a_k . e_i) (independent sigmoids, bias-free 1x1 conv C -> K);
    t_k = max over real words i of s_ik * e_i.

    The score weights keep PyTorch's default initialisation (uniform in +-1/sqrt(C), std
    1/sqrt(3C)), as the reference's 1x1 conv does: every score starts near 0.5. (A Kaiming
    init would start them 45x more spread at C = 2048; WAM has no direct supervision, so
    its starting point matters.)

    Args:
        channels: C, the word feature width.
        num_parts: K.
    """

    def __init__(self, channels: int, num_parts: int) -> None:
        super().__init__()
        self.score = nn.Linear(channels, num_parts, bias=False)  # PyTorch's default init, as the reference

    def forward(self, words: torch.Tensor, mask: torch.Tensor) -> tuple:
        """words: B x L x C, mask: B x L bool (at least one True per row).

        Returns ``(parts B x K x C, attention B x L x K)``; attention is 0 at padding.
        """
        attention = torch.sigmoid(self.score(words)) * mask[..., None]
        return word_max(attention, words, mask), attention
