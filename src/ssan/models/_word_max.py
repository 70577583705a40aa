"""t[b, k, c] = max over real words i of s[b, i, k] * e[b, i, c], without a B x L x K x C tensor.

The dense product of the Word Attention Module is large (64 x 60 x 6 x 2048 floats, 190 MB,
at the paper's widths). In eager mode the max is taken over blocks of word positions, recording
which word wins, and the backward pass routes each gradient to that word in O(B K C). The block
holds at most ``block_elements(device)`` products: cache-sized on a CPU, large on a GPU (a few
blocks per caption batch instead of hundreds of tiny kernels). Tracing, compiling and ONNX
export get the plain dense formulation (same values), whose graph does not depend on the length.

Precision: under autocast the function runs in float32 (``torch.amp.custom_fwd`` with
``cast_inputs=torch.float32`` for the autocast device type), so its backward accumulates in
float32 too. Determinism: the backward's scatter-add uses atomic additions on CUDA; under
``torch.use_deterministic_algorithms(True)`` an atomic-free backward is used instead (per-part
scatters without collisions, and a blockwise comparison sum for the scores).
"""

from __future__ import annotations

import functools

import torch

from ssan.models.layers import is_tracing

_CPU_BLOCK_ELEMENTS = 1 << 22  # 16 MB of float32 products: stays in a CPU's cache
_DEVICE_BLOCK_ELEMENTS = 1 << 26  # 256 MB: a handful of blocks at the paper's widths on a GPU


def block_elements(device: torch.device) -> int:
    """Products held by one block of the blocked max on ``device``."""
    return _CPU_BLOCK_ELEMENTS if device.type == "cpu" else _DEVICE_BLOCK_ELEMENTS


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
    step = max(1, block_elements(words.device) // max(1, batch * parts * words.size(2)))
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


def _scatter_backward(grad, scores, words, index, needs) -> tuple:
    """Gradients by scatter-add into the winning positions (atomic additions on CUDA)."""
    batch, length, parts = scores.shape
    channels = words.size(2)
    part_ids = torch.arange(parts, device=grad.device)[None, :, None]
    channel_ids = torch.arange(channels, device=grad.device)[None, None, :]
    score_index = (index * parts + part_ids).reshape(batch, -1)  # into B x (L K)
    word_index = (index * channels + channel_ids).reshape(batch, -1)  # into B x (L C)
    grad = grad.reshape(batch, -1)
    grad_scores = grad_words = None
    if needs[0]:
        src = grad * words.reshape(batch, -1).gather(1, word_index)
        grad_scores = torch.zeros(batch, length * parts, dtype=scores.dtype, device=scores.device)
        grad_scores = grad_scores.scatter_add_(1, score_index, src).view(batch, length, parts)
    if needs[1]:
        src = grad * scores.reshape(batch, -1).gather(1, score_index)
        grad_words = torch.zeros(batch, length * channels, dtype=words.dtype, device=words.device)
        grad_words = grad_words.scatter_add_(1, word_index, src).view(batch, length, channels)
    return grad_scores, grad_words


def _deterministic_backward(grad, scores, words, index, needs) -> tuple:
    """The same gradients without atomic additions (a fixed summation order on every device)."""
    batch, length, parts = scores.shape
    grad_scores = grad_words = None
    if needs[1]:  # for fixed (b, k, c) exactly one word wins: per part, a scatter without collisions
        grad_words = torch.zeros_like(words)
        for k in range(parts):
            src = grad[:, k, :] * scores[:, :, k].gather(1, index[:, k, :])  # B x C: s[b, winner, k]
            grad_words = grad_words + torch.zeros_like(words).scatter_(1, index[:, k, None, :], src[:, None, :])
    if needs[0]:  # grad_scores[b, l, k] = sum_c [index[b, k, c] == l] * grad[b, k, c] * words[b, l, c]
        grad_scores = torch.zeros_like(scores)
        step = max(1, block_elements(words.device) // max(1, batch * parts * words.size(2)))
        for start in range(0, length, step):
            stop = min(length, start + step)
            positions = torch.arange(start, stop, device=index.device)
            hits = index[:, :, None, :] == positions[None, None, :, None]  # B x K x l x C
            block = (hits * (grad[:, :, None, :] * words[:, None, start:stop, :])).sum(dim=-1)  # B x K x l
            grad_scores[:, start:stop, :] = block.transpose(1, 2)
    return grad_scores, grad_words


def _make_function(device_type: str):
    """The autograd function for ``device_type``, with its autocast behaviour declared."""

    class _WordMax(torch.autograd.Function):
        @staticmethod
        @torch.amp.custom_fwd(device_type=device_type, cast_inputs=torch.float32)
        def forward(ctx, scores, words, mask):
            values, index = _blocked_max(scores, words, mask, with_index=True)
            ctx.save_for_backward(scores, words, index)
            return values

        @staticmethod
        @torch.autograd.function.once_differentiable
        @torch.amp.custom_bwd(device_type=device_type)
        def backward(ctx, grad):
            scores, words, index = ctx.saved_tensors
            grad = grad.to(scores.dtype)
            needs = ctx.needs_input_grad[:2]
            if torch.are_deterministic_algorithms_enabled():
                grads = _deterministic_backward(grad, scores, words, index, needs)
            else:
                grads = _scatter_backward(grad, scores, words, index, needs)
            return grads[0], grads[1], None

    _WordMax.__name__ = f"_WordMax_{device_type}"
    return _WordMax


@functools.cache
def _function_for(device_type: str):
    return _make_function(device_type)


def word_max(scores: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """max over real words of scores * words.

    Args:
        scores: B x L x K attention scores.
        words: B x L x C word features.
        mask: B x L bool, True at real words (at least one per row).

    Returns:
        B x K x C; differentiable in ``scores`` and ``words`` (float32 under autocast).
    """
    if is_tracing():
        return dense_word_max(scores, words, mask)
    if torch.is_grad_enabled() and (scores.requires_grad or words.requires_grad):
        return _function_for(words.device.type).apply(scores, words.contiguous(), mask)
    return _blocked_max(scores, words, mask, with_index=False)[0]
