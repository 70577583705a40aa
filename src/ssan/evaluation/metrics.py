"""Retrieval ranking metrics: Rank-k (CMC), mAP and mINP, exact and fast.

Definitions (those of IRRA, the field's most-used codebase; see
``docs/datasets-and-metrics.md`` section 2), for query i with |G_i| matching gallery items
ranked by descending score:

- Rank-k = 100 * mean_i [the first match is within the first k];
- AP_i = (1/|G_i|) * sum over matches m of (matches ranked at or before m) / rank(m)
  (non-interpolated); mAP = 100 * mean_i AP_i;
- INP_i = |G_i| / rank(last match); mINP = 100 * mean_i INP_i.

Ties are broken deterministically by gallery order: the rank of a match is 1 + the number of
gallery items scored strictly higher + the number of items with an equal score that come
before it in the gallery (what a stable descending sort gives).

Algorithm: only the ranks of the matches are needed, so no row is sorted: for a block of
queries the scores of their matches are gathered and each match's rank is counted with one
vectorised comparison pass, O(G * matches) per query instead of O(G log G) for a sort (see
:mod:`ssan.evaluation._ranking`). Queries with very many matches fall back to a stable sort.
"""

from __future__ import annotations

import logging
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from ssan.evaluation._ranking import match_ranks

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 5, 10)
CHUNK_ROWS = 4096  # rows handed to the accumulator at a time by rank_metrics
# per device type: (matches per query above which rows are sorted, elements of the
# rows x matches x gallery work buffer of one block)
_DEVICE_DEFAULTS = {"cpu": (1024, 1 << 20), "other": (128, 1 << 26)}


def as_tensor(values, name: str = "array") -> torch.Tensor:
    """A torch view of a tensor, NumPy array or sequence (NumPy memory is shared, not copied)."""
    if isinstance(values, torch.Tensor):
        return values
    try:
        if isinstance(values, np.ndarray):
            with warnings.catch_warnings():  # read-only arrays: nothing here writes into them
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(values)
        return torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be a tensor, a NumPy array or a sequence of numbers ({exc})") from None


def _check_ids(ids: torch.Tensor, name: str) -> torch.Tensor:
    if ids.dim() != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype.is_complex:
        raise TypeError(f"{name} must hold integer identities, got {ids.dtype}")
    return ids.long()


def _check_ks(ks: Sequence[int]) -> tuple:
    ks = tuple(int(k) for k in ks)
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


class _GalleryGroups:
    """Gallery items grouped by identity: the matches of any query id in O(log G).

    Args:
        gallery_ids: (G,) long identities, on the device of the similarity.
    """

    def __init__(self, gallery_ids: torch.Tensor):
        self.ids = gallery_ids
        self.order = torch.sort(gallery_ids, stable=True).indices  # items of an id stay in gallery order
        self.unique, self.counts = torch.unique_consecutive(gallery_ids[self.order], return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def matches(self, query_ids: torch.Tensor, first_index: int):
        """(C,) query ids -> (positions C x M of the matches in gallery order, padded; counts C)."""
        slot = torch.searchsorted(self.unique, query_ids).clamp_(max=max(len(self.unique) - 1, 0))
        found = self.unique[slot] == query_ids if len(self.unique) else torch.zeros_like(query_ids, dtype=torch.bool)
        if not bool(found.all()):
            row = int((~found).nonzero()[0, 0])
            raise ValueError(f"query {first_index + row} (id {int(query_ids[row])}) has no matching gallery item")
        counts = self.counts[slot]
        width = int(counts.max()) if len(counts) else 0
        offsets = torch.arange(width, device=query_ids.device)
        offsets = torch.minimum(offsets[None, :], counts[:, None] - 1)  # padding repeats the last match
        return self.order[self.starts[slot][:, None] + offsets], counts


def query_metrics(ranks: torch.Tensor, counts: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-query figures from the ranks of their matches.

    Args:
        ranks: R x M 1-based ranks of each query's matches; entries past ``counts`` are ignored.
        counts: (R,) number of matches of each query (>= 1).

    Returns:
        ``{"first_rank": (R,) long, "ap": (R,) float64, "ap_trapezoid": (R,) float64,
        "inp": (R,) float64}``. ``ap_trapezoid`` is the SSAN reference code's AP (see
        :func:`trapezoid_ap`).
    """
    width = ranks.shape[1]
    k = torch.arange(1, width + 1, device=ranks.device)
    valid = k[None, :] <= counts[:, None]
    ranks = torch.where(valid, ranks, torch.iinfo(torch.long).max).sort(1).values
    precision = torch.where(valid, k[None, :].double() / ranks.double(), 0.0)
    last = ranks.gather(1, (counts - 1)[:, None])[:, 0]
    return {
        "first_rank": ranks[:, 0],
        "ap": precision.sum(1) / counts.double(),
        "ap_trapezoid": trapezoid_ap(ranks, counts, valid, precision),
        "inp": counts.double() / last.double(),
    }


def trapezoid_ap(
    ranks: torch.Tensor, counts: torch.Tensor, valid: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """The SSAN reference's trapezoid-interpolated AP, per query.

    Its ``calculate_ap``: for the i-th match (0-based) at 0-based position p_i,
    ``ap += (1/n) * (old_precision + precision) / 2`` with precision = (i+1)/(p_i+1) and
    old_precision = i/p_i (1.0 when p_i = 0). ``ranks`` (sorted, 1-based), ``valid`` and
    ``precision`` are those of :func:`query_metrics`. It is not the standard AP: report it
    under its own name (``mAP_trapezoid``), never as ``mAP``.
    """
    i = torch.arange(ranks.shape[1], device=ranks.device, dtype=torch.float64)[None, :]
    before = (ranks.double() - 1.0).clamp_min(1.0)  # p_i, guarded where p_i = 0 (then old = 1)
    old = torch.where(ranks == 1, torch.ones_like(before), i / before)
    area = torch.where(valid, (old + precision) / 2, 0.0)
    total = area.cumsum(1).gather(1, (counts - 1)[:, None])[:, 0]  # a running sum: padding never enters
    return total / counts.double()


class RankMetricAccumulator:
    """Rank-k / mAP / mINP over queries processed in chunks (``reset / process / evaluate``).

    Args:
        ks: the Rank-k cut-offs to report.
        sort_above: queries with more matches than this are ranked by a stable sort
            (None: 1024 on the CPU, 128 elsewhere).
        block_elements: elements (rows x matches x gallery) of one block's work buffer
            (None: 2**20 on the CPU, 2**26 elsewhere).
        workers: CPU threads (None: ``torch.get_num_threads()``).

    Usage::

        acc = RankMetricAccumulator()
        for rows in chunks:
            acc.process(similarity_rows, query_ids_rows, gallery_ids)
        metrics = acc.evaluate()  # {"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": ..}
    """

    def __init__(
        self,
        ks: Sequence[int] = DEFAULT_KS,
        sort_above: Optional[int] = None,
        block_elements: Optional[int] = None,
        workers: Optional[int] = None,
    ):
        self.ks = _check_ks(ks)
        self.sort_above = None if sort_above is None else int(sort_above)
        self.block_elements = None if block_elements is None else max(1, int(block_elements))
        self.workers = workers
        self._groups: Optional[_GalleryGroups] = None
        self.reset()

    def reset(self) -> None:
        """Forget every processed query (the gallery grouping is kept)."""
        self._parts: list = []
        self.num_queries = 0

    def _gallery(self, gallery_ids, device: torch.device) -> _GalleryGroups:
        ids = _check_ids(as_tensor(gallery_ids, "gallery_ids"), "gallery_ids").to(device)
        cached = self._groups
        if cached is None or cached.ids.device != ids.device or not torch.equal(cached.ids, ids):
            self._groups = _GalleryGroups(ids)
        return self._groups

    def process(self, similarity, query_ids, gallery_ids) -> None:
        """Add a chunk of queries.

        Args:
            similarity: C x G scores (tensor on any device, or NumPy array); higher is better.
            query_ids: (C,) integer identities of the chunk's queries.
            gallery_ids: (G,) integer identities of the gallery (the same for every chunk).
        """
        scores = as_tensor(similarity, "similarity")
        if scores.dim() != 2:
            raise ValueError(f"similarity must be a 2-D matrix, got shape {tuple(scores.shape)}")
        groups = self._gallery(gallery_ids, scores.device)
        queries = _check_ids(as_tensor(query_ids, "query_ids"), "query_ids").to(scores.device)
        if scores.shape != (len(queries), len(groups.ids)):
            raise ValueError(
                f"similarity has shape {tuple(scores.shape)} but there are {len(queries)} "
                f"queries and {len(groups.ids)} gallery items"
            )
        if len(queries) == 0:
            return
        positions, counts = groups.matches(queries, self.num_queries)
        ranks = self._ranks(scores, positions, counts)
        figures = query_metrics(ranks, counts.cpu())
        figures["num_matches"] = counts
        self._parts.append({key: value.cpu() for key, value in figures.items()})
        self.num_queries += len(queries)

    def _settings(self, device: torch.device) -> tuple:
        sort_above, budget = _DEVICE_DEFAULTS["cpu" if device.type == "cpu" else "other"]
        if self.sort_above is not None:
            sort_above = self.sort_above
        if self.block_elements is not None:
            budget = self.block_elements
        return sort_above, budget

    def _ranks(self, scores: torch.Tensor, positions: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        sort_above, budget = self._settings(scores.device)
        return match_ranks(
            scores,
            positions,
            counts,
            self.num_queries,
            sort_above=sort_above,
            budget=budget,
            workers=self.workers or torch.get_num_threads(),
        )

    def per_query(self) -> Dict[str, torch.Tensor]:
        """Per-query figures so far: ``first_rank``, ``ap``, ``ap_trapezoid``, ``inp``, ``num_matches`` (CPU)."""
        keys = ("first_rank", "ap", "ap_trapezoid", "inp", "num_matches")
        floats = ("ap", "ap_trapezoid", "inp")
        if not self._parts:
            return {key: torch.empty(0, dtype=torch.float64 if key in floats else torch.long) for key in keys}
        return {key: torch.cat([part[key] for part in self._parts]) for key in keys}

    def evaluate(self) -> Dict[str, float]:
        """``{"R<k>": ..., "mAP": ..., "mINP": ..., "mAP_trapezoid": ...}`` in percent over every query.

        ``mAP`` is the standard (non-interpolated) AP, the headline; ``mAP_trapezoid`` is the
        SSAN reference code's interpolated variant, for comparison with figures it produced.
        """
        if self.num_queries == 0:
            raise ValueError("no queries were processed")
        figures = self.per_query()
        first = figures["first_rank"]
        out = {f"R{k}": 100.0 * float((first <= k).double().mean()) for k in self.ks}
        out["mAP"] = 100.0 * float(figures["ap"].mean())
        out["mINP"] = 100.0 * float(figures["inp"].mean())
        out["mAP_trapezoid"] = 100.0 * float(figures["ap_trapezoid"].mean())
        return out


def rank_metrics(
    similarity, query_ids, gallery_ids, ks: Sequence[int] = DEFAULT_KS, chunk_size: Optional[int] = None
) -> Dict[str, float]:
    """Rank-k, mAP and mINP (percent) of a query x gallery score matrix.

    Args:
        similarity: Q x G scores, higher = more similar (torch tensor on any device, or NumPy
            array); computed on its own device.
        query_ids: (Q,) integer identities of the queries.
        gallery_ids: (G,) integer identities of the gallery items; a gallery item matches a
            query when their identities are equal.
        ks: Rank-k cut-offs.
        chunk_size: queries processed at a time (None: 4096); memory stays bounded.

    Returns:
        ``{"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": .., "mAP_trapezoid": ..}`` (one ``R<k>``
        per k), floats in %; ``mAP_trapezoid`` is the SSAN reference code's interpolated AP.

    Raises:
        ValueError: a query has no matching gallery item (names the query index and id), the
            scores contain NaN, or the shapes disagree.
    """
    scores = as_tensor(similarity, "similarity")
    queries = as_tensor(query_ids, "query_ids")
    if scores.dim() != 2 or scores.shape[0] != len(queries):
        raise ValueError(f"similarity has shape {tuple(scores.shape)} but there are {len(queries)} queries")
    step = CHUNK_ROWS if chunk_size is None else int(chunk_size)
    if step < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    accumulator = RankMetricAccumulator(ks)
    for start in range(0, scores.shape[0], step):
        accumulator.process(scores[start : start + step], queries[start : start + step], gallery_ids)
    return accumulator.evaluate()
