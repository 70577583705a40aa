"""``ssan serve``: the search web page and HTTP API (FastAPI under uvicorn)."""

from __future__ import annotations

import argparse
import logging

from ssan.commands._searcher_options import add_searcher_arguments

HELP = "serve the search page and HTTP API for an index (FastAPI + uvicorn)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", required=True, help="index folder written by `ssan index`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    add_searcher_arguments(parser)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024, help="larger request bodies get 413")


def run(args: argparse.Namespace) -> int:
    from ssan.errors import SsanError
    from ssan.search import Searcher

    try:
        import uvicorn

        from ssan.search.app import create_app
    except ImportError:
        raise SsanError("serving needs FastAPI and uvicorn: pip install 'ssan[serve]'") from None
    searcher = Searcher(args.index, backend=args.backend, device=args.device, checkpoint=args.checkpoint,
                        onnx_dir=args.onnx, threads=args.threads)
    app = create_app(searcher, max_body_bytes=args.max_body_bytes)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the gallery is reachable from other machines", args.host)
    log.info("serving %d images on http://%s:%d/", len(searcher.index), args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
