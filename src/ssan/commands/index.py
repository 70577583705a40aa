"""``ssan index``: encode a gallery (a folder of images or a prepared split) into a search index."""

from __future__ import annotations

import argparse

HELP = "encode a gallery (folder of images or prepared split) into a FAISS search index"

_TUNING = ("nlist", "m", "nbits", "nprobe", "refine", "hnsw_m", "ef_search", "ef_construction")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="trained checkpoint (best.pt / last.pt); required with the torch backend")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images, searched recursively (jpg, png, bmp, gif, webp)")
    source.add_argument("--data", help="output folder of `ssan prepare` (keeps the identities)")
    parser.add_argument("--split", default="test", help="split of --data to index (default: test)")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument("--add", action="store_true", help="add new images to the index in --out (same checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an index already in --out")
    parser.add_argument("--kind", choices=("flat", "ivfpq", "hnsw"), default=None,
                        help="flat: exact (default); ivfpq: compressed; hnsw: graph (recall@10 is reported)")
    parser.add_argument("--nlist", type=int, default=0, help="IVF-PQ clusters (0: about 4*sqrt(N))")
    parser.add_argument("--m", type=int, default=0, help="IVF-PQ sub-quantisers (0: largest divisor of the width <= 64)")
    parser.add_argument("--nbits", type=int, default=8, help="IVF-PQ bits per code")
    parser.add_argument("--nprobe", type=int, default=32, help="IVF-PQ clusters visited per query")
    parser.add_argument("--refine", type=int, default=4, help="IVF-PQ: re-score refine*k candidates exactly (0: off)")
    parser.add_argument("--hnsw-m", dest="hnsw_m", type=int, default=32, help="HNSW neighbours per node")
    parser.add_argument("--ef-search", dest="ef_search", type=int, default=128, help="HNSW search breadth")
    parser.add_argument("--ef-construction", dest="ef_construction", type=int, default=200, help="HNSW build breadth")
    parser.add_argument("--recall-queries", type=int, default=500, help="query sample for recall@10 (approximate kinds)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="run the encoders on")
    parser.add_argument("--onnx", help="folder of `ssan export` (onnx backend; default: OUT/onnx)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per encoding batch")
    parser.add_argument("--workers", type=int, default=0, help="image loading processes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def default_device(device):
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _spec(args):
    from ssan.errors import SsanError
    from ssan.search import IndexSpec

    if args.kind is None:
        defaults = IndexSpec()
        changed = [name for name in _TUNING if getattr(args, name) != getattr(defaults, name)]
        if changed:
            raise SsanError(f"--{changed[0].replace('_', '-')} needs --kind (ivfpq or hnsw)")
        return None
    return IndexSpec(kind=args.kind, **{name: getattr(args, name) for name in _TUNING})


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ssan.engine import distributed
    from ssan.errors import SsanError
    from ssan.search import GalleryIndex

    if args.backend == "torch" and not args.checkpoint:
        raise SsanError("--checkpoint is required with the torch backend")
    onnx_dir = args.onnx or (str(Path(args.out) / "onnx") if args.backend == "onnx" else None)
    try:
        index = GalleryIndex.build(
            args.out, args.checkpoint, images=args.images, data=args.data, split=args.split, spec=_spec(args),
            add=args.add, overwrite=args.overwrite, backend=args.backend, onnx_dir=onnx_dir,
            device=default_device(args.device), batch_size=args.batch_size, num_workers=args.workers,
            recall_queries=args.recall_queries, progress=not args.no_progress,
        )
    finally:
        distributed.cleanup()
    if index is None:  # a non-zero rank of a torchrun launch
        return 0
    meta = index.meta
    print(f"index: {args.out} ({len(index)} images, {index.kind}, vector width {index.layout['dim']})")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} file(s): unreadable or refused (listed above)")
    if meta["index"]["recall@10"] is not None:
        print(f"recall@10 vs exact: {meta['index']['recall@10']:.4f} "
              f"(queries: {meta['index']['recall_queries']}, see --recall-queries)")
    return 0
