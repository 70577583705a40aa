"""``ssan export``: export the image and text encoders to ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse

HELP = "export the encoders to ONNX (verified against PyTorch with onnxruntime)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="trained checkpoint")
    parser.add_argument("--out", required=True, help="folder for image.onnx, text.onnx and meta.json")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity check")


def run(args: argparse.Namespace) -> int:
    from ssan.export import export_onnx, parity_report  # checks for the export extra before any work

    meta = export_onnx(args.checkpoint, args.out, opset=args.opset, verify=not args.no_verify)
    print(f"exported to {args.out}: image.onnx, text.onnx, meta.json (opset {args.opset})")
    report = parity_report(meta)
    if report is None:
        return 0
    print("max |onnx - torch| per output (and relative to max |torch|):")
    for name, diff, relative in report["rows"]:
        print(f"  {name:<16} {diff:.3e}  (relative {relative:.1e})")
    if not report["passed"]:
        print(f"parity check FAILED: relative difference {report['worst']:.1e} > {report['tolerance']:.0e}")
        return 1
    print(f"parity check passed (relative differences <= {report['tolerance']:.0e})")
    return 0
