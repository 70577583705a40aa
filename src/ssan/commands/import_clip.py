"""``ssan import-clip``: a pretrained open_clip model as an ssan checkpoint (zero-shot search, test, export)."""

from __future__ import annotations

import argparse

HELP = "write a pretrained open_clip model (CLIP) as an ssan checkpoint that every --checkpoint accepts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="open_clip model name: ViT-B-16, ViT-L-14, RN50...")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--weights",
        metavar="FILE",
        help="local weights: OpenAI's TorchScript .pt, an open_clip .bin/.pt state dict or .safetensors",
    )
    source.add_argument(
        "--pretrained",
        metavar="TAG",
        help="open_clip pretrained tag (openai, laion2b_s34b_b88k...) or hf-hub:ORG/REPO, downloaded by open_clip",
    )
    parser.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    parser.add_argument(
        "--preprocess",
        choices=("letterbox", "stretch"),
        default="letterbox",
        help="tall crops onto the square input: letterbox with the mean colour (default) or stretch",
    )
    gelu = parser.add_mutually_exclusive_group()
    gelu.add_argument("--quick-gelu", dest="quick_gelu", action="store_true", default=None, help="force QuickGELU")
    gelu.add_argument(
        "--no-quick-gelu", dest="quick_gelu", action="store_false", help="GELU even for a TorchScript archive"
    )


def run(args: argparse.Namespace) -> int:
    from ssan.clip.checkpoint import import_clip

    arch = import_clip(
        args.model,
        args.out,
        weights=args.weights,
        pretrained=args.pretrained,
        preprocess=args.preprocess,
        quick_gelu=args.quick_gelu,
    )
    height, width = arch["image_size"]
    print(
        f"wrote {args.out}: open_clip {arch['model']} ({arch['weights']}), input {height}x{width} "
        f"({arch['preprocess']}), {arch['context_length']} text tokens, weights {arch['weights_fingerprint']}"
    )
    return 0
