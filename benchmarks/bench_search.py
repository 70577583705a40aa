"""Measure gallery search: latency and index memory by gallery size, recall on real features.

Stages (``--stages``, default ``exact,ivfpq,real``):
  exact   FAISS exact inner-product index (the default ``ssan index``) at ``--exact-sizes``
          (default 10k, 100k) over synthetic vectors at the paper layout: 10,240 floats
          (global 1024 + 6 x 1024 parts + 6 x 512 relation), term-wise L2-normalised, drawn
          around identity centres with a shared offset (post-LeakyReLU features are not centred).
  ivfpq   compressed IVF-PQ (``--nlist``, m=64 x 8 bits = 64 bytes per image) at
          ``--ivfpq-sizes`` (default 100k; add 1000000 for 1M): trained once on a sample, then
          filled in chunks generated on the fly, so 1M images (41 GB as floats) never exist in
          memory at once. Latency only: recall on synthetic vectors says nothing.
  real    recall@10 of IVF-PQ and HNSW against the exact index on REAL features: a trained
          checkpoint (``--checkpoint``, e.g. the one ``ssan demo`` writes) encodes a synthetic
          gallery of ``--real-ids`` x 4 images at 64x32 (written like ``ssan synth``), and the
          gallery's own captions are the queries; also the end-to-end ``Searcher.search`` latency
          (text encoding + search). Skipped, saying so, without ``--checkpoint``.

Latency is single-query (one query per call, as the service does), ``--queries`` queries after
warm-up (at most 15 s per size); p50/p99 in milliseconds. Index memory is the size of the
serialised FAISS index (what it holds in RAM); the process's resident-memory growth is printed
beside it. Threads follow ``OMP_NUM_THREADS``; on a shared or busy machine set it to 1 (OpenMP
threads that wait for a busy core make every call several times slower). The default stages
take about 4 minutes on 2 busy cores; the 1M IVF-PQ fill alone takes about 20 minutes there.

    python benchmarks/bench_search.py [--stages exact,ivfpq,real] [--checkpoint CKPT]
        [--exact-sizes 10000,100000] [--ivfpq-sizes 100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ssan.search import ann

PAPER_WIDTHS = (1024, 6 * 1024, 6 * 512)
CHUNK = 20_000


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def normalise_terms(x: np.ndarray, widths=PAPER_WIDTHS) -> np.ndarray:
    """L2-normalise each term's slice of the rows of ``x`` in place (like flatten_features)."""
    start = 0
    for width in widths:
        block = x[:, start : start + width]
        block /= np.linalg.norm(block, axis=1, keepdims=True) + 1e-12
        start += width
    return x


class ClusteredVectors:
    """Synthetic flattened features: identity centres + shared offset + noise, term-normalised.

    Rows are generated chunk by chunk from a seed (noise as differences of rows of a fixed
    noise bank, so a million rows cost gathers, not a billion fresh normal draws).
    """

    def __init__(self, identities: int = 4096, noise: float = 0.7, bank: int = 2048, seed: int = 0):
        rng = np.random.default_rng(seed)
        dim = sum(PAPER_WIDTHS)
        offset = np.abs(rng.standard_normal(dim, dtype=np.float32))
        self.centres = offset + rng.standard_normal((identities, dim), dtype=np.float32)
        self.bank = rng.standard_normal((bank, dim), dtype=np.float32) * (noise / np.sqrt(2))
        self.seed = seed

    def rows(self, start: int, count: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, start))
        labels = rng.integers(len(self.centres), size=count)
        first, second = rng.integers(len(self.bank), size=(2, count))
        x = self.centres[labels] + self.bank[first] - self.bank[second]
        return normalise_terms(x)

    def queries(self, count: int) -> np.ndarray:
        rng = np.random.default_rng((self.seed, 2**40))  # apart from every row chunk
        labels = rng.integers(len(self.centres), size=count)
        noise = rng.standard_normal((count, self.centres.shape[1]), dtype=np.float32)
        return normalise_terms(self.centres[labels] + noise)


def latency_ms(index, spec, queries: np.ndarray, k: int = 10, features=None, budget_s: float = 15.0) -> dict:
    """Single-query search times (ms) after 3 warm-up queries: p50, p99, mean and the count.

    Stops after ``budget_s`` seconds (at least 20 queries): an exact single-query scan of a
    paper-layout gallery streams the whole index from memory (4 GB at 100k images).
    """
    for query in queries[:3]:
        ann.search(index, spec, query[None], k, features=features)
    times, begin = [], time.perf_counter()
    for query in queries:
        start = time.perf_counter()
        ann.search(index, spec, query[None], k, features=features)
        times.append((time.perf_counter() - start) * 1e3)
        if len(times) >= 20 and time.perf_counter() - begin > budget_s:
            break
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(np.mean(times)),
        "queries": len(times),
    }


def fill(index, source: ClusteredVectors, size: int) -> float:
    start = time.perf_counter()
    for offset in range(0, size, CHUNK):
        index.add(source.rows(offset, min(CHUNK, size - offset)))
    return time.perf_counter() - start


def report(stage: str, size: int, index, spec, source, queries, rss_before: int, build_s: float) -> dict:
    row = {
        "stage": stage,
        "images": size,
        "build_s": round(build_s, 1),
        "index_MB": round(ann.index_bytes(index) / 2**20, 1),
        "rss_growth_MB": round((rss_bytes() - rss_before) / 2**20, 1),
        **latency_ms(index, spec, queries),
    }
    print(
        f"{stage:6s} {size:>9,d} images  p50 {row['p50_ms']:8.2f} ms  p99 {row['p99_ms']:8.2f} ms  "
        f"index {row['index_MB']:9.1f} MB  (RSS +{row['rss_growth_MB']:.0f} MB, built in {build_s:.1f} s, "
        f"{row['queries']} queries)",
        flush=True,
    )
    return row


def stage_exact(sizes, source, queries) -> list:
    rows = []
    for size in sizes:
        before = rss_bytes()
        spec = ann.IndexSpec(kind="flat")
        index = ann.make_index(spec, queries.shape[1])
        rows.append(report("exact", size, index, spec, source, queries, before, fill(index, source, size)))
        del index
    return rows


def stage_ivfpq(sizes, source, queries, nlist: int, nprobe: int, train_size: int, niter: int) -> list:
    faiss = ann.faiss_module()
    spec = ann.IndexSpec(kind="ivfpq", nlist=nlist, m=64, nbits=8, nprobe=nprobe, refine=0)
    start = time.perf_counter()
    trained = ann.make_index(spec, queries.shape[1])
    trained.cp.niter = niter
    trained.pq.cp.niter = niter
    ann.train(trained, spec, source.rows(10**9, train_size))  # a sample apart from the gallery rows
    train_s = time.perf_counter() - start
    print(f"ivfpq  trained nlist={nlist}, m=64, nbits=8 on {train_size:,d} vectors in {train_s:.1f} s", flush=True)
    rows = []
    for size in sizes:
        before = rss_bytes()
        index = faiss.clone_index(trained)
        ann.configure(index, spec)
        rows.append(report("ivfpq", size, index, spec, source, queries, before, fill(index, source, size)))
        rows[-1].update({"nlist": nlist, "nprobe": nprobe, "train_s": round(train_s, 1)})
        del index
    return rows


def real_gallery(work: Path, ids: int) -> Path:
    """A synthetic gallery of ``ids`` x 4 images at 64x32 (what ``ssan synth --size 64x32`` writes)."""
    from ssan.data import generate_synthetic

    root = work / "synth"
    if not (root / "reid_raw.json").is_file():
        start = time.perf_counter()
        generate_synthetic(root, ids=ids, size=(64, 32), seed=11, fmt="cuhk-pedes", workers=os.cpu_count() or 1)
        print(f"real   wrote {ids * 4:,d} synthetic images in {time.perf_counter() - start:.1f} s", flush=True)
    return root


def caption_queries(searcher, root: Path, count: int) -> np.ndarray:
    from ssan.search.encode import encode_token_lists

    records = json.loads((root / "reid_raw.json").read_text(encoding="utf-8"))
    captions = [c for r in records for c in r["captions"]]
    picked = [captions[i] for i in ann.sample_rows(len(captions), count, seed=5)]
    ids = [searcher.info.vocab.encode(c)[0] for c in picked]
    return encode_token_lists(searcher.encoders, [t for t in ids if t], searcher.max_length), picked


def approximate_rows(features, queries, exact) -> list:
    """recall@10, latency and size of approximate indexes over real features."""
    rows = []
    specs = [ann.IndexSpec(kind="ivfpq", nprobe=p, refine=r) for p in (16, 64) for r in (0, 4)]
    specs += [ann.IndexSpec(kind="hnsw", ef_search=e) for e in (64, 256)]
    built = {}
    for spec in specs:
        key = (spec.kind, spec.hnsw_m)
        start = time.perf_counter()
        if key not in built:
            built[key] = ann.build(features, spec)
        index, resolved = built[key]
        resolved = ann.IndexSpec.from_dict(
            {**resolved.to_dict(), "nprobe": spec.nprobe, "refine": spec.refine, "ef_search": spec.ef_search}
        )
        ann.configure(index, resolved)
        build_s = time.perf_counter() - start
        _, found = ann.search(index, resolved, queries, 10, features=features)
        row = {
            "stage": "real",
            "kind": spec.kind,
            "images": len(features),
            "dim": features.shape[1],
            "recall@10": ann.recall_at_k(exact, found),
            "index_MB": round(ann.index_bytes(index) / 2**20, 1),
            "build_s": round(build_s, 1),
            **latency_ms(index, resolved, queries[:200], features=features),
        }
        detail = (
            f"nlist={resolved.nlist} m={resolved.m} nprobe={min(resolved.nprobe, resolved.nlist)} "
            f"refine={resolved.refine}"
            if spec.kind == "ivfpq"
            else f"M={resolved.hnsw_m} efSearch={resolved.ef_search}"
        )
        row["params"] = detail
        print(
            f"real   {spec.kind:5s} {detail:38s} recall@10 {row['recall@10']:.4f}  p50 {row['p50_ms']:.2f} ms  "
            f"p99 {row['p99_ms']:.2f} ms  index {row['index_MB']:.1f} MB",
            flush=True,
        )
        rows.append(row)
    return rows


def stage_real(args) -> list:
    if not args.checkpoint:
        print("real   stage skipped: no --checkpoint given (pass the checkpoint `ssan demo` trains)", flush=True)
        return []
    from ssan.search import Searcher, build_index

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ssan-bench-"))
    try:
        root = real_gallery(work, args.real_ids)
        start = time.perf_counter()
        index = build_index(
            work / "index", args.checkpoint, images=root / "imgs", overwrite=True, batch_size=256, progress=False
        )
        seconds = time.perf_counter() - start
        print(
            f"real   encoded {len(index):,d} images (vector width {index.layout['dim']}) in {seconds:.1f} s "
            f"({len(index) / seconds:.0f} images/s)",
            flush=True,
        )
        searcher = Searcher(work / "index")
        queries, texts = caption_queries(searcher, root, args.queries * 5)
        features = np.ascontiguousarray(index.features, dtype=np.float32)
        exact = ann.exact_top_k(features, queries, 10)
        print(f"real   {len(queries)} caption queries; exact top-10 as reference", flush=True)
        rows = approximate_rows(features, queries, exact)
        times = []
        for text in texts[: args.queries]:
            begin = time.perf_counter()
            searcher.search(text, k=10)
            times.append((time.perf_counter() - begin) * 1e3)
        row = {
            "stage": "real-e2e",
            "images": len(index),
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
        }
        print(
            f"real   Searcher.search (text encoding + exact search, {len(index):,d} images): "
            f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms",
            flush=True,
        )
        return rows + [row]
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stages", default="exact,ivfpq,real")
    parser.add_argument("--exact-sizes", default="10000,100000")
    parser.add_argument("--ivfpq-sizes", default="100000")
    parser.add_argument("--nlist", type=int, default=256)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=10_000, help="IVF-PQ training sample (>= 39 x nlist)")
    parser.add_argument("--niter", type=int, default=10, help="k-means iterations when training IVF-PQ")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--checkpoint", help="trained checkpoint for the real-feature stage")
    parser.add_argument("--real-ids", type=int, default=5000, help="identities of the real gallery (x4 images)")
    parser.add_argument("--work", help="folder for the real gallery and index (default: a temporary one)")
    parser.add_argument("--json", help="also write the measured rows here")
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))
    faiss = ann.faiss_module()
    print(
        f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rows = []
    if stages & {"exact", "ivfpq"}:
        source = ClusteredVectors()
        queries = source.queries(args.queries)
        if "exact" in stages:
            rows += stage_exact([int(s) for s in args.exact_sizes.split(",") if s], source, queries)
        if "ivfpq" in stages:
            sizes = [int(s) for s in args.ivfpq_sizes.split(",") if s]
            rows += stage_ivfpq(sizes, source, queries, args.nlist, args.nprobe, args.train_size, args.niter)
    if "real" in stages:
        rows += stage_real(args)
    print(f"done; load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
