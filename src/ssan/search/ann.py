"""FAISS indexes over flattened SSAN features: exact, IVF-PQ and HNSW.

A gallery vector is the concatenation of the term-wise L2-normalised features
(:func:`ssan.models.flatten_features`), so the inner product of a query
vector with it is exactly the SSAN similarity (method section 3). ``flat``
keeps every float and gives those scores exactly; ``ivfpq`` compresses each
vector to ``m * nbits`` bits and searches ``nprobe`` of ``nlist`` clusters;
``hnsw`` keeps every float and searches a graph. Approximate kinds are scored
against the exact index with :func:`recall_at_k`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ssan._extras import require
from ssan.errors import SsanError

log = logging.getLogger(__name__)

KINDS = ("flat", "ivfpq", "hnsw")


def faiss_module():
    return require("faiss", "gallery indexes need FAISS", "search")


@dataclass
class IndexSpec:
    """How to index: the kind and its parameters (0 means choose from the gallery size)."""

    kind: str = "flat"  # flat (exact) | ivfpq (compressed) | hnsw (graph)
    nlist: int = 0  # IVF clusters; 0 = about 4 * sqrt(N), at most N / 39
    m: int = 0  # PQ sub-quantisers (must divide the vector width); 0 = the largest divisor <= 64
    nbits: int = 8  # bits per PQ code
    nprobe: int = 32  # IVF clusters visited per query
    refine: int = 4  # IVF-PQ: fetch refine * k candidates and re-score them exactly (0 = off)
    hnsw_m: int = 32  # HNSW neighbours per node
    ef_search: int = 128  # HNSW search breadth
    ef_construction: int = 200  # HNSW build breadth

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SsanError(f"unknown index kind {self.kind!r}; valid: {', '.join(KINDS)}")
        for name in ("nlist", "m", "nbits", "nprobe", "refine", "hnsw_m", "ef_search", "ef_construction"):
            if getattr(self, name) < 0:
                raise SsanError(f"index option {name} must be >= 0, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    def resolved(self, num_vectors: int, dim: int) -> IndexSpec:
        """A copy with the automatic (0) parameters filled in for this gallery."""
        spec = dataclasses.replace(self)
        if spec.kind == "ivfpq":
            if not spec.nlist:
                spec.nlist = max(1, min(int(4 * math.sqrt(max(num_vectors, 1))), num_vectors // 39))
            if not spec.m:
                spec.m = max(d for d in range(1, min(64, dim) + 1) if dim % d == 0)
            if not spec.nbits:
                spec.nbits = 8
        return spec


def _check_ivfpq(spec: IndexSpec, num_train: int, dim: int) -> None:
    if dim % spec.m:
        raise SsanError(f"IVF-PQ: m={spec.m} must divide the vector width {dim}")
    if not 1 <= spec.nbits <= 16:
        raise SsanError(f"IVF-PQ: nbits must be between 1 and 16, got {spec.nbits}")
    needed = max(spec.nlist, 2**spec.nbits)
    if num_train < needed:
        raise SsanError(
            f"IVF-PQ needs at least {needed} gallery vectors to train (nlist={spec.nlist}, "
            f"nbits={spec.nbits}); the gallery has {num_train}: use --kind flat or lower --nbits/--nlist"
        )


def make_index(spec: IndexSpec, dim: int):
    """An empty FAISS index of ``spec.kind`` (``spec`` already resolved) for ``dim``-wide vectors."""
    faiss = faiss_module()
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        return index
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.m, spec.nbits, faiss.METRIC_INNER_PRODUCT)
    return index  # faiss's Python wrapper keeps the quantizer alive with the index


def configure(index, spec: IndexSpec) -> None:
    """Apply the search-time parameters (nprobe, efSearch) to a built or loaded index."""
    faiss = faiss_module()
    if spec.kind == "ivfpq":
        faiss.extract_index_ivf(index).nprobe = max(1, min(spec.nprobe, spec.nlist or spec.nprobe))
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search


def train(index, spec: IndexSpec, sample: np.ndarray) -> None:
    """Train a compressed index on ``sample`` (N x dim float32); exact kinds need nothing."""
    if spec.kind == "ivfpq":
        _check_ivfpq(spec, len(sample), sample.shape[1])
        wanted = 39 * max(spec.nlist, 2**spec.nbits)
        if len(sample) < wanted:
            log.warning("IVF-PQ trained on %d vectors (FAISS suggests >= %d): expect lower recall", len(sample), wanted)
        index.cp.min_points_per_centroid = 1  # the warning above replaces FAISS's per-run messages
        index.pq.cp.min_points_per_centroid = 1
        index.train(np.ascontiguousarray(sample, dtype=np.float32))


def build(features: np.ndarray, spec: IndexSpec):
    """Build a FAISS index over ``features`` (N x dim float32).

    Returns:
        (index, resolved spec).
    """
    features = np.ascontiguousarray(features, dtype=np.float32)
    num, dim = features.shape
    spec = spec.resolved(num, dim)
    index = make_index(spec, dim)
    train(index, spec, features)
    if num:
        index.add(features)
    configure(index, spec)
    log.debug("built %s index over %d vectors of width %d", spec.kind, num, dim)
    return index, spec


def exact_top_k(features: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row numbers of the exact top-k (Q x k) by inner product, ties by row number."""
    faiss = faiss_module()
    index = faiss.IndexFlatIP(features.shape[1])
    index.add(np.ascontiguousarray(features, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(features)))
    return rows


def recall_at_k(exact_rows: np.ndarray, approx_rows: np.ndarray) -> float:
    """Mean fraction of the exact top-k found in the approximate top-k (both Q x k)."""
    if exact_rows.size == 0:
        raise SsanError("recall: no queries")
    hits = [len(set(e.tolist()) & set(a.tolist())) / len(e) for e, a in zip(exact_rows, approx_rows)]
    return float(np.mean(hits))


def sample_rows(num: int, size: int, seed: int = 0) -> np.ndarray:
    """At most ``size`` distinct row numbers of ``num``, drawn reproducibly, sorted."""
    if num <= size:
        return np.arange(num)
    return np.sort(np.random.default_rng(seed).choice(num, size=size, replace=False))


def index_bytes(index) -> int:
    """Size of the serialised index in bytes (the memory its data takes)."""
    return int(faiss_module().serialize_index(index).nbytes)


def search(
    index,
    spec: IndexSpec,
    queries: np.ndarray,
    k: int,
    features: Optional[np.ndarray] = None,
    rows: Optional[np.ndarray] = None,
):
    """Top-k (scores, rows), each Q x k, best first; rows are -1 where fewer than k exist.

    For IVF-PQ with ``spec.refine`` and ``features`` (the gallery's exact vectors, an array
    or a memory map), ``refine * k`` candidates are re-scored exactly and re-ranked.
    ``rows`` (sorted row numbers) restricts the search to those rows: see :func:`search_rows`.
    """
    if rows is not None:
        return search_rows(index, spec, queries, k, features, rows)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    total = index.ntotal
    if total == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    k = min(k, total)
    wants_refine = spec.kind == "ivfpq" and spec.refine > 0 and features is not None
    fetch = min(total, k * spec.refine) if wants_refine else k
    scores, rows = index.search(queries, fetch)
    if not wants_refine:
        return scores, rows
    return _rescore(queries, rows, features, k)


def _rescore(queries: np.ndarray, rows: np.ndarray, features: np.ndarray, k: int):
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_rows = np.full((len(queries), k), -1, dtype=np.int64)
    for q, candidates in enumerate(rows):
        valid = np.unique(candidates[candidates >= 0])
        exact = np.asarray(features[valid], dtype=np.float32) @ queries[q]
        order = np.lexsort((valid, -exact))[:k]
        out_scores[q, : len(order)] = exact[order]
        out_rows[q, : len(order)] = valid[order]
    return out_scores, out_rows


SUBSET_SCAN_ROWS = 20_000  # exact index: at most this many selected rows are scored in one matrix product
SMALL_SCAN_ROWS = 2_000  # compressed or graph index: below this, scoring the rows exactly is cheaper than FAISS


def _selector_params(spec: IndexSpec, rows: np.ndarray):
    """FAISS search parameters that visit only ``rows`` (the selector must outlive the search)."""
    faiss = faiss_module()
    selector = faiss.IDSelectorBatch(rows)
    if spec.kind == "ivfpq":
        params = faiss.SearchParametersIVF(sel=selector, nprobe=max(1, min(spec.nprobe, spec.nlist or spec.nprobe)))
    elif spec.kind == "hnsw":
        params = faiss.SearchParametersHNSW(sel=selector, efSearch=spec.ef_search)
    else:
        params = faiss.SearchParameters(sel=selector)
    return params, selector


def scan_rows(features: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray):
    """Exact top-k among ``rows`` of ``features`` (ties by row number): (scores, rows), each Q x min(k, |rows|)."""
    k = min(k, len(rows))
    out_scores = np.empty((len(queries), k), dtype=np.float32)
    out_rows = np.empty((len(queries), k), dtype=np.int64)
    # |rows| x Q; einsum's own loop: a BLAS call this small mostly waits for its threads on a busy machine
    scores = np.einsum("rf,qf->rq", np.asarray(features[rows], dtype=np.float32), queries)
    for q in range(len(queries)):
        order = np.lexsort((rows, -scores[:, q]))[:k]
        out_scores[q], out_rows[q] = scores[order, q], rows[order]
    return out_scores, out_rows


def search_rows(index, spec: IndexSpec, queries: np.ndarray, k: int, features, rows: np.ndarray):
    """Top-k among ``rows`` only; k' = min(k, |rows|) results for every query, always.

    A small selection (at most :data:`SUBSET_SCAN_ROWS` on the exact index,
    :data:`SMALL_SCAN_ROWS` on the others) is scored exactly from ``features``; a larger one is
    searched by FAISS with an ``IDSelectorBatch`` (flat: exact; IVF-PQ and HNSW: approximate,
    re-scored as usual), and a query for which the selector left fewer than k' results (IVF
    lists or graph paths missing the selected rows) is scored exactly.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows):
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    k = min(k, len(rows))
    small = SUBSET_SCAN_ROWS if spec.kind == "flat" else SMALL_SCAN_ROWS
    if features is not None and len(rows) <= small:
        return scan_rows(features, queries, k, rows)
    params, _selector = _selector_params(spec, rows)
    wants_refine = spec.kind == "ivfpq" and spec.refine > 0 and features is not None
    fetch = min(len(rows), k * spec.refine) if wants_refine else k
    scores, found = index.search(queries, fetch, params=params)
    if wants_refine:
        scores, found = _rescore(queries, found, features, k)
    scores, found = scores[:, :k], found[:, :k]
    short = np.flatnonzero((found < 0).any(axis=1))
    if len(short) and features is not None:
        scores[short], found[short] = scan_rows(features, queries[short], k, rows)
    return scores, found
