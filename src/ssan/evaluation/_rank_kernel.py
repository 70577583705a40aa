"""Numba kernels counting the ranks of each query's matches (imported only when Numba is there).

For each match at gallery position j with score t, one pass over the row counts the items
scored strictly higher and a pass over the items before j counts those tied with t; the row
stays in cache between its matches, so the matrix is read from memory once, with no work
buffer and no copy.

Counts accumulate as float32 with reassociation allowed, which lets LLVM vectorise the
loops; every partial count is an integer below 2**24, where float32 is exact, so the result
is exact. Rows longer than :data:`SPAN` are counted span by span (a slower loop, only for
galleries of more than four million items). The comparisons are never relaxed (no
``nnan``/``ninf``), so NaN is seen and reported.
"""

from __future__ import annotations

import numba
import numpy as np

SPAN = 1 << 22  # items per float32 partial count (exact below 2**24)
_OPTIONS = dict(nogil=True, boundscheck=False, error_model="numpy", fastmath={"reassoc", "nsz", "arcp", "contract"})


def _jit(**extra):
    """``numba.njit`` caching compiled code on disk when a cache folder is writable."""

    def wrap(function):
        try:
            return numba.njit(cache=True, **_OPTIONS, **extra)(function)
        except RuntimeError:  # no writable cache location: compile in memory each process
            return numba.njit(**_OPTIONS, **extra)(function)

    return wrap


@_jit(inline="always")
def _count_above(row, lo, hi, t):
    one, zero = np.float32(1.0), np.float32(0.0)
    total = zero
    for g in range(lo, hi):
        total += one if row[g] > t else zero
    return int(total)


@_jit(inline="always")
def _count_equal(row, lo, hi, t):
    one, zero = np.float32(1.0), np.float32(0.0)
    total = zero
    for g in range(lo, hi):
        total += one if row[g] == t else zero
    return int(total)


@_jit(inline="always")
def _count_nan(row, lo, hi):
    one, zero = np.float32(1.0), np.float32(0.0)
    total = zero
    for g in range(lo, hi):
        total += one if row[g] != row[g] else zero
    return int(total)


@_jit()
def count_ranks(scores, row_start, row_stop, positions, counts, ranks):
    """Ranks of the matches of rows [row_start, row_stop), written into ``ranks``.

    Args:
        scores: Q x G float32 or float64 C-contiguous scores.
        row_start, row_stop: the rows to process.
        positions: Q x M int64 gallery positions of each row's matches.
        counts: (Q,) int64 matches of each row (0: skip the row).
        ranks: Q x M int64 output, 1-based, ties broken by gallery order.

    Returns:
        The first row whose scores contain NaN (its remaining rows are left undone), or -1.
    """
    num_gallery = scores.shape[1]
    for r in range(row_start, row_stop):
        if counts[r] == 0:
            continue
        row = scores[r]
        if num_gallery <= SPAN:  # the common case: one vectorised loop per count
            if _count_nan(row, 0, num_gallery):
                return r
            for m in range(counts[r]):
                j = positions[r, m]
                t = row[j]
                ranks[r, m] = 1 + _count_above(row, 0, num_gallery, t) + _count_equal(row, 0, j, t)
            continue
        for lo in range(0, num_gallery, SPAN):
            if _count_nan(row, lo, min(lo + SPAN, num_gallery)):
                return r
        for m in range(counts[r]):
            j = positions[r, m]
            t = row[j]
            rank = 1
            for lo in range(0, num_gallery, SPAN):
                rank += _count_above(row, lo, min(lo + SPAN, num_gallery), t)
            for lo in range(0, j, SPAN):
                rank += _count_equal(row, lo, min(lo + SPAN, j), t)
            ranks[r, m] = rank
    return -1
