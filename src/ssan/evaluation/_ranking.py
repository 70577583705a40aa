"""Ranks of each query's matching gallery items, without sorting the rows.

Private helpers of :mod:`ssan.evaluation.metrics`. The rank of a match at gallery position j
with score t is ``1 + #{g: s_g > t} + #{g < j: s_g == t}`` (ties broken by gallery order, as
a stable descending sort would). With a handful of matches per query, counting is far
cheaper than sorting: O(G * M) comparisons per query instead of O(G log G).

- CPU with Numba (:mod:`ssan.evaluation._compiled`): a compiled loop counts each match's rank
  in place, one pass over the row per match while the row stays in cache; contiguous ranges
  of rows run on a small thread pool (the kernel releases the GIL).
- CPU without Numba: NumPy's vectorised comparisons write one byte per (match, gallery item);
  the bytes are counted by summing them as 64-bit words (byte lanes cannot overflow within
  255 words) and folding the lanes. Blocks of rows run on the thread pool (NumPy releases
  the GIL).
- Other devices: the same counts with torch comparisons.
- Very many matches per query: a stable sort of the rows.
On the NumPy and torch paths a second comparison pass looks for items tied with a match (a
block without any costs one flat count); a tied match gets its tie-break count from an exact
comparison of its row.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import numpy as np
import torch

from ssan.evaluation._compiled import kernel

_LANES = 255  # 64-bit words summed before a byte lane could overflow
_LOW_BYTES = np.uint64(0x00FF00FF00FF00FF)
_FOLD16 = np.uint64(0x0001000100010001)
_local = threading.local()
_pools: dict = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide thread pool per worker count (threads keep their work buffers)."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ssan-rank")
        return _pools[workers]


def _raise_nan(query_index: np.ndarray, bad_rows) -> None:
    raise ValueError(f"similarity row of query {int(query_index[int(bad_rows[0])])} contains NaN")


# ------------------------------------------------------------------ NumPy (CPU) path
def _byte_buffer(rows: int, width: int, num_gallery: int) -> np.ndarray:
    """A per-thread bool buffer (rows x width x P), P = num_gallery rounded up to 8 * 255,
    whose padding columns are False."""
    padded = -(-num_gallery // (8 * _LANES)) * 8 * _LANES
    need = rows * width * padded
    buf = getattr(_local, "buffer", None)
    if buf is None or buf.size < need:
        buf = _local.buffer = np.empty(need, dtype=bool)
    flags = buf[:need].reshape(rows, width, padded)
    flags[:, :, num_gallery:] = False
    return flags


def _count_true(flags: np.ndarray) -> np.ndarray:
    """R x M x P bool (P a multiple of 8 * 255) -> R x M counts of True."""
    rows, width, padded = flags.shape
    words = flags.view(np.uint64).reshape(rows, width, padded // (8 * _LANES), _LANES)
    lanes = words.sum(-1, dtype=np.uint64)  # 8 byte lanes, each <= 255
    pairs = (lanes & _LOW_BYTES) + ((lanes >> np.uint64(8)) & _LOW_BYTES)  # 4 lanes of 16 bits
    return ((pairs * _FOLD16) >> np.uint64(48)).sum(-1).astype(np.int64)


def _any_true(flags: np.ndarray) -> np.ndarray:
    rows, width, _ = flags.shape
    return flags.view(np.uint64).reshape(rows, width, -1).max(-1) != 0


def _tie_breaks_np(scores: np.ndarray, thresholds: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(P, G) rows, (P,) thresholds and positions -> items equal to each threshold before it."""
    before = np.arange(scores.shape[1])[None, :] < positions[:, None]
    return np.count_nonzero((scores == thresholds[:, None]) & before, axis=1)


def _numpy_block(scores: np.ndarray, positions: np.ndarray, query_index: np.ndarray) -> np.ndarray:
    """Ranks (R x M) of the matches at ``positions`` in the rows of ``scores`` (R x G)."""
    rows, num_gallery = scores.shape
    width = positions.shape[1]
    if np.isnan(scores.max()):  # max propagates NaN: one cheap pass
        _raise_nan(query_index, np.isnan(scores).any(1).nonzero()[0])
    row_index = np.arange(rows)[:, None]
    thresholds = scores[row_index, positions]
    flags = _byte_buffer(rows, width, num_gallery)
    np.greater(scores[:, None, :], thresholds[:, :, None], out=flags[:, :, :num_gallery])
    ranks = _count_true(flags) + 1
    np.equal(scores[:, None, :], thresholds[:, :, None], out=flags[:, :, :num_gallery])
    if np.count_nonzero(flags) == rows * width:  # each match equals only itself: no ties
        return ranks
    flags[row_index, np.arange(width)[None, :], positions] = False  # the match itself
    tied_rows, tied_cols = _any_true(flags).nonzero()
    if len(tied_rows):
        ranks[tied_rows, tied_cols] += _tie_breaks_np(
            scores[tied_rows], thresholds[tied_rows, tied_cols], positions[tied_rows, tied_cols]
        )
    return ranks


def _as_numpy(block: torch.Tensor) -> np.ndarray:
    if block.dtype in (torch.float16, torch.bfloat16):
        block = block.float()  # exact widening; NumPy has no fast half comparisons
    elif not block.dtype.is_floating_point:
        block = block.double()
    return np.ascontiguousarray(block.detach().numpy())


# ------------------------------------------------------------------ torch path (any device)
def _torch_block(scores: torch.Tensor, positions: torch.Tensor, query_index: np.ndarray) -> torch.Tensor:
    """Ranks by torch comparisons (used off the CPU)."""
    bad = torch.isnan(scores).any(1).nonzero()
    if len(bad):
        _raise_nan(query_index, bad[:, 0].cpu().numpy())
    thresholds = scores.gather(1, positions)
    ranks = (scores[:, None, :] > thresholds[:, :, None]).sum(-1) + 1
    equal = (scores[:, None, :] == thresholds[:, :, None]).sum(-1)
    tied = (equal > 1).any(1).nonzero()[:, 0]
    if len(tied):
        before = torch.arange(scores.shape[1], device=scores.device)[None, None, :] < positions[tied][:, :, None]
        ranks[tied] += ((scores[tied][:, None, :] == thresholds[tied][:, :, None]) & before).sum(-1)
    return ranks


def _sorted_block(scores: torch.Tensor, positions: torch.Tensor, query_index: np.ndarray) -> torch.Tensor:
    """Ranks from a stable descending sort of each row (queries with very many matches)."""
    bad = torch.isnan(scores).any(1).nonzero()
    if len(bad):
        _raise_nan(query_index, bad[:, 0].cpu().numpy())
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    rank_of = torch.empty_like(order)
    rank_of.scatter_(1, order, torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order))
    return rank_of.gather(1, positions)


# ------------------------------------------------------------------ scheduling
def _blocks(counts: torch.Tensor, num_gallery: int, budget: int, sort_above: int) -> List[Tuple[np.ndarray, int]]:
    """Row groups (indices, width) of similar match counts, each within ``budget`` elements."""
    counts = counts.cpu().numpy()
    order = np.argsort(-counts, kind="stable")
    sorted_counts = counts[order].tolist()
    blocks, start = [], 0
    while start < len(order):
        width = sorted_counts[start]
        per_row = num_gallery * (1 if width > sort_above else width)
        stop = min(len(order), start + max(1, budget // max(per_row, 1)))
        blocks.append((order[start:stop], width))
        start = stop
    return blocks


def match_ranks(
    scores: torch.Tensor,
    positions: torch.Tensor,
    counts: torch.Tensor,
    first_index: int,
    sort_above: int,
    budget: int,
    workers: int,
) -> torch.Tensor:
    """1-based ranks of every query's matches.

    Args:
        scores: C x G similarity rows (any device).
        positions: C x M gallery positions of the matches (rows padded past ``counts``).
        counts: (C,) number of matches per query.
        first_index: index of the first row among all queries (for error messages).
        sort_above: rows with more matches than this are ranked by sorting.
        budget: elements of work buffer per block of rows.
        workers: CPU threads (compiled kernel and NumPy path).

    Returns:
        C x M long ranks on the CPU (entries past ``counts`` are unspecified).
    """
    ranks = np.zeros(tuple(positions.shape), dtype=np.int64)
    blocks = _blocks(counts, scores.shape[1], budget, sort_above)
    if scores.device.type == "cpu":
        array, where = _as_numpy(scores), positions.numpy()
        count_ranks = kernel()
        if count_ranks is not None:  # the compiled kernel counts every row it can; the rest are sorted
            _compiled_ranks(count_ranks, array, where, counts.numpy(), ranks, first_index, sort_above, workers)
            blocks = [block for block in blocks if block[1] > sort_above]
        run = _cpu_runner(array, where, ranks, first_index, sort_above)
        if workers > 1 and len(blocks) > 1:
            list(_pool(workers).map(run, blocks))
        else:
            for block in blocks:
                run(block)
    else:
        for rows, width in blocks:
            index = torch.from_numpy(rows).to(scores.device)
            chunk, pos = (_float_rows(scores.index_select(0, index)), positions.index_select(0, index)[:, :width])
            rank_rows = _sorted_block if width > sort_above else _torch_block
            ranks[rows, :width] = rank_rows(chunk, pos, rows + first_index).cpu().numpy()
    return torch.from_numpy(ranks)


def _compiled_ranks(
    count_ranks,
    array: np.ndarray,
    positions: np.ndarray,
    counts: np.ndarray,
    ranks: np.ndarray,
    first_index: int,
    sort_above: int,
    workers: int,
) -> None:
    """Fill ``ranks`` of the rows with at most ``sort_above`` matches with the compiled kernel,
    contiguous ranges of rows on the thread pool."""
    positions = np.ascontiguousarray(positions, dtype=np.int64)
    light = np.where(counts > sort_above, 0, counts).astype(np.int64)  # 0: the kernel skips the row
    num_rows = array.shape[0]
    pieces = min(num_rows, 4 * workers) if workers > 1 else 1
    bounds = np.linspace(0, num_rows, pieces + 1).astype(np.int64).tolist()
    spans = list(zip(bounds[:-1], bounds[1:]))
    if len(spans) > 1:
        bad = list(
            _pool(workers).map(lambda span: count_ranks(array, span[0], span[1], positions, light, ranks), spans)
        )
    else:
        bad = [count_ranks(array, 0, num_rows, positions, light, ranks)]
    bad = [row for row in bad if row >= 0]
    if bad:
        raise ValueError(f"similarity row of query {first_index + min(bad)} contains NaN")


def _cpu_runner(array: np.ndarray, positions: np.ndarray, ranks: np.ndarray, first_index: int, sort_above: int):
    def run(block: Tuple[np.ndarray, int]) -> None:
        rows, width = block
        contiguous = rows[-1] - rows[0] + 1 == len(rows) and bool(np.all(np.diff(rows) == 1))
        chunk = array[rows[0] : rows[-1] + 1] if contiguous else array[rows]
        pos, names = positions[rows, :width], rows + first_index
        if width > sort_above:
            result = _sorted_block(torch.from_numpy(chunk), torch.from_numpy(pos), names).numpy()
        else:
            result = _numpy_block(chunk, pos, names)
        ranks[rows, :width] = result

    return run


def _float_rows(block: torch.Tensor) -> torch.Tensor:
    if block.dtype in (torch.float16, torch.bfloat16):
        return block.float()
    return block if block.dtype.is_floating_point else block.double()
