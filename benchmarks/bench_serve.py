"""Load test of ``ssan serve``: N concurrent clients for a fixed time against 127.0.0.1.

Starts ``python -m ssan serve`` on a free local port (over ``--index``, or over a small
synthetic gallery indexed here with ``--checkpoint``, or with an untrained model of the
``synth`` preset when neither is given: the cost per request is the same), waits for
``/healthz``, runs ``--clients`` threads that POST ``/api/search`` (k=10, varied queries)
back to back for ``--duration`` seconds, then stops the server. The server runs as users
run it: behind a token (given in ``$SSAN_TOKEN``, sent as ``Authorization: Bearer``) and
writing its audit log (in a temporary folder, not in the index); ``--no-auth`` serves
without either, to see what they cost. Prints requests per second, latency p50/p99 and
the error count (non-200 answers and failed requests). The clients run on the same
machine as the server and share its CPUs.

    python benchmarks/bench_serve.py [--index DIR | --checkpoint CKPT] [--clients 8] [--duration 30] [--no-auth]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

QUERIES = [
    "a man in a black jacket and blue jeans with white shoes",
    "a woman wearing a red coat and black trousers carrying a bag",
    "the person has short black hair and wears a white shirt",
    "a girl in a yellow dress with long brown hair",
    "he is wearing a grey hoodie dark pants and a backpack",
    "a young woman in a pink top and white skirt",
    "man with a green shirt black shorts and red sneakers",
    "a pedestrian in a long blue coat holding an umbrella",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def untrained_checkpoint(path: Path, vocab_words: list) -> Path:
    """A synth-preset SSAN with random weights (same compute per request as a trained one)."""
    import torch

    from ssan.checkpoint import save_checkpoint
    from ssan.config import load_config
    from ssan.models import SSAN

    config = load_config("synth")
    torch.manual_seed(0)
    model = SSAN(len(vocab_words), config.model)
    state = {
        "arch": model.arch,
        "model": model.state_dict(),
        "vocab": vocab_words,
        "config": config.to_dict(),
        "dataset": {"name": "synth", "num_classes": 0, "vocab_size": len(vocab_words)},
        "epoch": 0,
        "metrics": {},
        "best": None,
    }
    return save_checkpoint(path, state)


def build_index(work: Path, checkpoint, ids: int) -> Path:
    """Index a synthetic gallery of ``ids`` x 4 images (64x32); returns the index folder."""
    from ssan.data import generate_synthetic, prepare_dataset
    from ssan.search import build_index

    generate_synthetic(work / "synth", ids=ids, size=(64, 32), seed=3, fmt="cuhk-pedes")
    if checkpoint is None:
        prepare_dataset("cuhk-pedes", work / "synth", work / "prepared")
        words = json.loads((work / "prepared" / "vocab.json").read_text())["words"]
        checkpoint = untrained_checkpoint(work / "untrained.pt", words)
        print("model: untrained synth-preset SSAN (no --checkpoint); latency does not depend on training")
    build_index(work / "index", checkpoint, images=work / "synth" / "imgs", progress=False)
    return work / "index"


def start_server(index: Path, port: int, backend: str, threads, token, audit: Path) -> subprocess.Popen:
    """``ssan serve`` with ``token`` in $SSAN_TOKEN and its audit log at ``audit`` (no token: --no-auth, no log)."""
    command = [
        sys.executable,
        "-m",
        "ssan",
        "serve",
        "--index",
        str(index),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend",
        backend,
    ]
    command += ["--audit-log", str(audit)] if token else ["--no-auth", "--no-audit-log"]
    if threads:
        command += ["--threads", str(threads)]
    env = {key: value for key, value in os.environ.items() if key != "SSAN_TOKEN"}
    if token:
        env["SSAN_TOKEN"] = token
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"ssan serve exited with status {server.returncode}: {server.stderr.read()[-2000:]}")
        try:
            return httpx.get(base + "/healthz", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"ssan serve did not answer /healthz within {timeout:.0f} s")


def client(base: str, headers: dict, stop_at: float, seed: int, latencies: list, errors: list) -> None:
    """POST queries back to back until ``stop_at``; append latencies (ms) and errors."""
    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=base, headers=headers, timeout=30) as session:
        while time.monotonic() < stop_at:
            query = QUERIES[int(rng.integers(len(QUERIES)))]
            start = time.perf_counter()
            try:
                response = session.post("/api/search", json={"query": query, "k": 10})
                ok = response.status_code == 200 and len(response.json()["results"]) > 0
                if not ok:
                    errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(f"{exc.__class__.__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - start) * 1e3)


def load_test(base: str, headers: dict, clients: int, duration: float) -> dict:
    latencies, errors = [], []
    stop_at = time.monotonic() + duration
    threads = [
        threading.Thread(target=client, args=(base, headers, stop_at, seed, latencies, errors))
        for seed in range(clients)
    ]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + 60)
    elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else float("nan"),
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else float("nan"),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", help="existing index folder (default: index a synthetic gallery here)")
    parser.add_argument("--checkpoint", help="checkpoint for the synthetic gallery's index")
    parser.add_argument("--ids", type=int, default=250, help="identities of the synthetic gallery (x4 images)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    parser.add_argument("--threads", type=int, default=None, help="pass --threads to ssan serve")
    parser.add_argument("--no-auth", action="store_true", help="serve without a token and without the audit log")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ssan-serve-bench-"))
    server = None
    try:
        index = Path(args.index) if args.index else build_index(work, args.checkpoint, args.ids)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        token = None if args.no_auth else secrets.token_urlsafe(24)
        audit = work / "audit.jsonl"
        server = start_server(index, port, args.backend, args.threads, token, audit)
        health = wait_ready(base, server)
        access = "no token, no audit log" if token is None else "token and audit log"
        print(
            f"serving {health['images']} images ({health['kind']} index, {health['backend']} encoders, "
            f"threads {args.threads or 'default'}, {access}) at {base}; "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        result = load_test(base, headers, args.clients, args.duration)
        print(
            f"{result['clients']} clients x {result['seconds']} s: {result['requests']} requests, "
            f"{result['requests_per_s']:.1f} requests/s, p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
        )
        for error in result["first_errors"]:
            print(f"  error: {error}")
        if token:
            logged = len(audit.read_text(encoding="utf-8").splitlines())
            print(f"audit log: {logged} lines for {result['requests'] + result['errors']} requests answered")
        return 0 if result["errors"] == 0 else 1
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
