"""Options shared by the commands that load a :class:`ssan.search.Searcher` (search, serve)."""

from __future__ import annotations

import argparse


def add_searcher_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="run the text encoder on")
    parser.add_argument("--onnx", help="folder of `ssan export` (onnx backend; default: INDEX/onnx)")
    parser.add_argument("--checkpoint", help="use this checkpoint instead of the one recorded in the index")
    parser.add_argument("--device", default="cpu", help="cpu, cuda ... (default: cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch and FAISS (default: theirs; 1 suits busy machines)",
    )
