"""Helpers for the service tests (not a test file): a fake searcher and a real uvicorn in a thread."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class FakeSearcher:
    """Counts model calls; serves ``files`` by id (0, 1, ...); ``zzqx`` is an unusable query."""

    def __init__(self, files):
        self.files = list(files)
        self.calls = 0
        self.lock = threading.Lock()

    def search(self, query, k=10, filters=None):
        from ssan.search import QueryError

        with self.lock:
            self.calls += 1
        if query == "zzqx":
            raise QueryError("none of the query's words are in the model's vocabulary (zzqx)")
        results = [
            {"rank": i + 1, "image_id": i, "score": 2.0 - i, "path": str(p), "name": p.name, "id": 7}
            for i, p in enumerate(self.files[:k])
        ]
        return {
            "query": query,
            "k": k,
            "results": results,
            "tokens": query.split()[:40],
            "unknown_words": [],
            "truncated": False,
            "attention": {"part_1": [[w, 0.5] for w in query.split()[:40]]},
        }

    def image_file(self, image_id):
        return self.files[image_id] if 0 <= image_id < len(self.files) else None

    def describe(self):
        return {"images": len(self.files), "kind": "flat", "backend": "fake"}


def fake_searcher(folder: Path, count: int = 2) -> FakeSearcher:
    """A FakeSearcher over ``count`` small PNG files written into ``folder``."""
    from PIL import Image

    files = []
    for number in range(count):
        path = folder / f"person{number}.png"
        Image.new("RGB", (32, 64), (number * 100 % 256, 0, 0)).save(path)
        files.append(path)
    return FakeSearcher(files)


@contextlib.contextmanager
def running(app, timeout_s: float = 60.0, **config):
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL, stops after."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start within {timeout_s:.0f} s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    scheme = "https" if config.get("ssl_certfile") else "http"
    try:
        yield f"{scheme}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def cli_server(*args, env=None, timeout_s: float = 120.0):
    """``python -m ssan serve ARGS --port 0`` in a subprocess; yields ``(process, start-up line)``.

    Fails when the process exits or prints nothing within ``timeout_s``; stopped (SIGTERM, then
    SIGKILL) afterwards.
    """
    command = [sys.executable, "-m", "ssan", "serve", *map(str, args), "--port", "0"]
    errors = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=errors, text=True, env={**os.environ, **(env or {})}
    )
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        line = process.stdout.readline().strip() if selector.select(timeout=timeout_s) else ""
        if not line:
            process.kill()
            errors.seek(0)
            raise RuntimeError(f"ssan serve printed no start-up line within {timeout_s:.0f} s: {errors.read()[-2000:]}")
        yield process, line
    finally:
        errors.close()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        process.stdout.close()


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple:
    """Send raw bytes to 127.0.0.1:port, read the whole answer; returns (status, body). Sent verbatim."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
                length = [
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ]
                if length and len(body) >= length[0]:
                    break
        except (ConnectionResetError, socket.timeout):
            pass
    answer = b"".join(chunks)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, answer.partition(b"\r\n\r\n")[2]
