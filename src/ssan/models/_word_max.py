"""t[b, k, c] = max over real words i of s[b, i, k] * e[b, i, c], without a B x L x K x C tensor.

The dense product of the Word Attention Module is large (64 x 60 x 6 x 2048 floats, 190 MB,
at the paper's widths) and, on CPUs, allocating it afresh every step costs more than the
arithmetic. In eager mode the max is therefore taken over blocks of word positions that
fit in cache, recording which word wins, and the backward pass routes each gradient to
that word with gather/scatter, in O(B K C). Tracing, compiling and ONNX export get the
plain dense formulation (same values), whose graph does not depend on the caption length.
"""

from __future__ import annotations

import torch

from ssan.models.layers import is_tracing

_BLOCK_ELEMENTS = 1 << 22  # elements of one block of the product (16 MB in float32)


def dense_word_max(scores: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference formulation: scores B x L x K, words B x L x C, mask B x L -> B x K x C."""
    product = scores.unsqueeze(-1) * words.unsqueeze(2)
    return product.masked_fill(~mask[:, :, None, None], float("-inf")).amax(dim=1)


def _blocked_max(scores: torch.Tensor, words: torch.Tensor, mask: torch.Tensor, with_index: bool) -> tuple:
    """Values B x K x C and, when asked, the index B x K x C of the winning word position."""
    keep = mask[..., None]
    scores = torch.where(keep, scores, torch.ones_like(scores))  # padded products become -inf
    words = torch.where(keep, words, torch.full_like(words, float("-inf")))
    batch, length, parts = scores.shape
    step = max(1, _BLOCK_ELEMENTS // max(1, batch * parts * words.size(2)))
    values = index = None
    for start in range(0, length, step):
        stop = min(length, start + step)
        block = scores[:, start:stop, :, None] * words[:, start:stop, None, :]
        block_max = block.amax(dim=1)
        block_index = None
        if with_index:  # 1-based position of a winner inside the block, as float32 (exact)
            positions = torch.arange(start + 1, stop + 1, device=block.device, dtype=torch.float32)
            block_index = ((block == block_max.unsqueeze(1)) * positions[None, :, None, None]).amax(dim=1)
        if values is None:
            values, index = block_max, block_index
            continue
        if with_index:
            index = torch.where(block_max > values, block_index, index)
        values = torch.maximum(values, block_max)
    if with_index:
        index = index.long() - 1
    return values, index


class _WordMax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores, words, mask):
        values, index = _blocked_max(scores, words, mask, with_index=True)
        ctx.save_for_backward(scores, words, index)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        scores, words, index = ctx.saved_tensors
        batch, length, parts = scores.shape
        channels = words.size(2)
        part_ids = torch.arange(parts, device=grad.device)[None, :, None]
        channel_ids = torch.arange(channels, device=grad.device)[None, None, :]
        score_index = (index * parts + part_ids).reshape(batch, -1)  # into B x (L K)
        word_index = (index * channels + channel_ids).reshape(batch, -1)  # into B x (L C)
        grad = grad.reshape(batch, -1)
        grad_scores = grad_words = None
        if ctx.needs_input_grad[0]:
            src = (grad * words.reshape(batch, -1).gather(1, word_index)).to(scores.dtype)
            grad_scores = torch.zeros(batch, length * parts, dtype=scores.dtype, device=scores.device)
            grad_scores = grad_scores.scatter_add_(1, score_index, src).view(batch, length, parts)
        if ctx.needs_input_grad[1]:
            src = (grad * scores.reshape(batch, -1).gather(1, score_index)).to(words.dtype)
            grad_words = torch.zeros(batch, length * channels, dtype=words.dtype, device=words.device)
            grad_words = grad_words.scatter_add_(1, word_index, src).view(batch, length, channels)
        return grad_scores, grad_words, None


def word_max(scores: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """max over real words of scores * words.

    Args:
        scores: B x L x K attention scores.
        words: B x L x C word features.
        mask: B x L bool, True at real words (at least one per row).

    Returns:
        B x K x C; differentiable in ``scores`` and ``words``.
    """
    if is_tracing():
        return dense_word_max(scores, words, mask)
    if torch.is_grad_enabled() and (scores.requires_grad or words.requires_grad):
        return _WordMax.apply(scores, words.contiguous(), mask)
    return _blocked_max(scores, words, mask, with_index=False)[0]
