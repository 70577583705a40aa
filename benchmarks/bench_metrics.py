"""Benchmark: ``rank_metrics`` at ICFG-PEDES test scale against the reference's per-query loop.

Inputs (identical for both): a 19,848 x 19,848 float32 score matrix whose rows are random
permutations of 19,848 distinct levels (random scores without ties, so the reference's
unstable argsort and our tie rule give the same order), gallery identities
``arange(G) // 5`` (about 5 images per identity) and query identities drawn from them.

Printed (all measured on this machine):
- wall (and CPU) time of ``ssan.rank_metrics`` with the CPU path it selects (the compiled
  Numba kernel when the ``fast`` extra is installed), then, as a secondary figure, with the
  NumPy path it falls back to without Numba, and of a per-query NumPy argsort loop written
  like the SSAN reference's ``calculate_ap`` (argsort, argwhere, isin, a Python loop over the
  matches; it computes the standard AP and INP so the outputs can be compared) over
  C-contiguous rows (its fastest form), their ratio, and whether every figure agrees;
- as a secondary figure, the same loop over the reference's own layout (it ranks the rows
  of ``similarity.t()``, which are strided in memory), on a subset, extrapolated;
- peak extra resident memory of each (sampled from /proc/self/statm every 2 ms; on other
  systems the ru_maxrss high-water mark, which only moves when it rises);
- the time of the float32 similarity matmul (Q x F) @ (F x G) that would have produced the
  matrix at the paper's feature width F = 10,240, measured on a subset of query rows and
  extrapolated to all rows (said explicitly).

The machine's load average is printed first: on a shared machine the figures move with it.

Usage: python benchmarks/bench_metrics.py [--queries N] [--gallery G] [--matmul-rows R]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import threading
import time

import numpy as np
import torch

from ssan.evaluation import _compiled, rank_metrics, set_rank_kernel

PAPER_WIDTH = 1024 + 6 * 1024 + 6 * 512  # global + parts + relation features of SSAN


class PeakMemory:
    """Peak resident memory above the level at entry, in MiB, while the block runs."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.statm = "/proc/self/statm" if os.path.exists("/proc/self/statm") else None
        self.method = "RSS sampled every 2 ms" if self.statm else "ru_maxrss high-water delta"
        self.peak_mib = 0.0

    def _rss(self) -> int:
        if self.statm:
            with open(self.statm) as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self):
        self._start = self._peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._rss())
        self.peak_mib = (self._peak - self._start) / 2**20


def reference_loop(similarity: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray, ks=(1, 5, 10)) -> dict:
    """The SSAN reference's evaluation loop (one full argsort per query), standard AP / INP."""
    cmc = np.zeros(len(gallery_ids))
    ap_sum = inp_sum = 0.0
    for i in range(len(query_ids)):
        index = np.argsort(similarity[i])[::-1]
        good_index = np.argwhere(gallery_ids == query_ids[i])
        mask = np.isin(index, good_index)
        hits = np.argwhere(mask).reshape(-1)
        cmc_i = np.zeros(len(index))
        cmc_i[int(hits[0]) :] = 1
        cmc += cmc_i
        ap = 0.0
        for j in range(len(hits)):
            ap += (j + 1) / (hits[j] + 1)
        ap_sum += ap / len(hits)
        inp_sum += len(hits) / (hits[-1] + 1)
    n = len(query_ids)
    out = {f"R{k}": 100.0 * cmc[k - 1] / n for k in ks}
    out.update({"mAP": 100.0 * ap_sum / n, "mINP": 100.0 * inp_sum / n})
    return out


def make_inputs(num_gallery: int, seed: int):
    rng = np.random.default_rng(seed)
    gallery_ids = np.arange(num_gallery) // 5
    query_ids = gallery_ids[rng.integers(0, num_gallery, num_gallery)]
    scores = np.tile(np.arange(num_gallery, dtype=np.float32) / np.float32(num_gallery), (num_gallery, 1))
    rng.permuted(scores, axis=1, out=scores)  # each row: a random order of distinct scores
    return scores, query_ids, gallery_ids


def time_matmul(num_queries: int, num_gallery: int, width: int, rows: int, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.randn(num_gallery, width, generator=generator)
    queries = torch.randn(min(rows, num_queries), width, generator=generator)
    queries[:8] @ gallery.T  # warm-up
    start = time.perf_counter()
    queries @ gallery.T
    seconds = time.perf_counter() - start
    return seconds, seconds * num_queries / len(queries), len(queries)


def time_rank_metrics(scores, query_ids, gallery_ids) -> tuple:
    """(figures, wall seconds, CPU seconds, PeakMemory) of one rank_metrics call, after a warm-up."""
    rank_metrics(scores[:64], query_ids[:64], gallery_ids)  # warm-up (kernel, thread pool, allocator)
    with PeakMemory() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        figures = rank_metrics(scores, query_ids, gallery_ids)
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    return figures, seconds, cpu_seconds, memory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=19848, help="gallery = query count (ICFG-PEDES test: 19848)")
    parser.add_argument(
        "--queries",
        type=int,
        default=None,
        help="run the reference loop on the first N queries only and extrapolate (default: all)",
    )
    parser.add_argument("--width", type=int, default=PAPER_WIDTH, help="feature width of the matmul (paper: 10240)")
    parser.add_argument("--matmul-rows", type=int, default=1024, help="query rows of the timed matmul (extrapolated)")
    parser.add_argument(
        "--reference-layout-queries",
        type=int,
        default=1000,
        help="also time the loop on the reference's own layout (rows of similarity.t(), i.e. "
        "strided) on N queries, extrapolated (0: skip)",
    )
    parser.add_argument(
        "--no-numpy-path", dest="numpy_path", action="store_false", help="skip timing the NumPy fallback path"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"torch {torch.__version__}, numpy {np.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    start = time.perf_counter()
    scores, query_ids, gallery_ids = make_inputs(args.gallery, args.seed)
    matches = np.bincount(gallery_ids)[query_ids]
    print(
        f"inputs: {scores.shape[0]} x {scores.shape[1]} float32 ({scores.nbytes / 2**30:.2f} GiB), "
        f"matches per query: mean {matches.mean():.2f}, min {matches.min()}, max {matches.max()} "
        f"(built in {time.perf_counter() - start:.1f} s)"
    )

    kernel = _compiled.kernel_name()
    ours, ours_seconds, ours_cpu, ours_memory = time_rank_metrics(scores, query_ids, gallery_ids)
    print(
        f"rank_metrics ({kernel} path): {ours_seconds:8.3f} s wall ({ours_cpu:.3f} s CPU, all threads), "
        f"peak extra memory {ours_memory.peak_mib:7.1f} MiB ({ours_memory.method})"
    )
    if kernel != "numpy" and args.numpy_path:
        previous = set_rank_kernel("numpy")
        fallback, numpy_seconds, numpy_cpu, numpy_memory = time_rank_metrics(scores, query_ids, gallery_ids)
        set_rank_kernel(previous)
        print(
            f"rank_metrics (numpy path, what runs without Numba): {numpy_seconds:8.3f} s wall "
            f"({numpy_cpu:.3f} s CPU), peak extra memory {numpy_memory.peak_mib:7.1f} MiB; "
            f"same figures: {fallback == ours}"
        )

    count = len(query_ids) if args.queries is None else min(args.queries, len(query_ids))
    with PeakMemory() as loop_memory:
        start, cpu = time.perf_counter(), time.process_time()
        loop = reference_loop(scores[:count], query_ids[:count], gallery_ids)
        loop_partial, loop_cpu = time.perf_counter() - start, time.process_time() - cpu
    scale = len(query_ids) / count
    loop_seconds = loop_partial * scale
    label = (
        "measured on all queries"
        if count == len(query_ids)
        else f"EXTRAPOLATED from {count} queries ({loop_partial:.2f} s)"
    )
    print(
        f"reference loop: {loop_seconds:8.3f} s wall ({loop_cpu * scale:.3f} s CPU; {label}), "
        f"peak extra memory {loop_memory.peak_mib:7.1f} MiB"
    )
    print(f"speed-up: {loop_seconds / ours_seconds:.1f}x wall, {loop_cpu * scale / ours_cpu:.1f}x CPU time")
    if kernel != "numpy" and args.numpy_path:
        print(
            f"speed-up of the numpy path: {loop_seconds / numpy_seconds:.1f}x wall, "
            f"{loop_cpu * scale / numpy_cpu:.1f}x CPU time"
        )

    if args.reference_layout_queries > 0:
        strided = np.asfortranarray(scores)  # the reference ranks rows of similarity.t(): strided in memory
        n = min(args.reference_layout_queries, len(query_ids))
        start = time.perf_counter()
        reference_loop(strided[:n], query_ids[:n], gallery_ids)
        strided_seconds = (time.perf_counter() - start) * len(query_ids) / n
        del strided
        print(
            f"reference loop on the reference's strided layout: {strided_seconds:8.3f} s wall "
            f"(EXTRAPOLATED from {n} queries; secondary figure, {strided_seconds / ours_seconds:.1f}x)"
        )

    same_queries = ours if count == len(query_ids) else rank_metrics(scores[:count], query_ids[:count], gallery_ids)
    worst = max(abs(same_queries[key] - loop[key]) for key in loop)
    print(f"outputs agree: {worst < 1e-9} (largest difference {worst:.2e} over {count} queries)")
    print("figures (%): " + ", ".join(f"{key} {value:.4f}" for key, value in ours.items()))

    partial, full, rows = time_matmul(len(query_ids), args.gallery, args.width, args.matmul_rows, args.seed)
    print(
        f"similarity matmul ({len(query_ids)} x {args.width}) @ ({args.width} x {args.gallery}) float32: "
        f"{full:.2f} s EXTRAPOLATED from {rows} query rows ({partial:.2f} s)"
    )
    print(f"metric step / matmul: {ours_seconds / full:.3f}")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
