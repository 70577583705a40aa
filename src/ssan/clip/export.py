"""ONNX export of a CLIP checkpoint's encoders, and the tokenizer its queries need without torch.

``image.onnx``: images (B x 3 x H x W, ssan-normalised) -> global (B x D, unit length);
``text.onnx``: BPE piece ids (B x L, 0-padded, no start/end) and lengths (B) -> global. The
start/end tokens and the padding to the context length are part of the text graph
(:meth:`ssan.clip.model.ClipRetrieval.context`), so the query path only runs the tokenizer:
its merge list is copied into the export folder and named in ``meta.json``
(``"tokenizer": {"kind": "clip-bpe", "file", "context_length"}``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from ssan.clip.bpe import BPE_FILE, ClipTokenizer

TOKENIZER_KIND = "clip-bpe"


class _ImageGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return (self.model.encode_image(images)["global"],)


class _TextGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor):
        return (self.model.encode_text(tokens, lengths)["global"],)


def export_clip_graphs(model, out_dir: Path, height: int, width: int, tokens, lengths, opset: int, write) -> None:
    """Write ``image.onnx`` and ``text.onnx`` of a :class:`ClipRetrieval` with ``write`` (ssan.export's)."""
    from ssan.search.onnx_backend import IMAGE_FILE, TEXT_FILE

    images = torch.randn(2, 3, height, width)
    axes = {"images": {0: "batch"}, "global": {0: "batch"}}
    write(_ImageGraph(model).eval(), (images,), out_dir / IMAGE_FILE, ["images"], ["global"], axes, opset)
    axes = {"tokens": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, "global": {0: "batch"}}
    write(
        _TextGraph(model).eval(), (tokens, lengths), out_dir / TEXT_FILE, ["tokens", "lengths"], ["global"], axes, opset
    )


def tokenizer_entry(model, out_dir: Path) -> dict:
    """Copy the merge list into ``out_dir``; the ``tokenizer`` entry of ``meta.json``."""
    tokenizer = ClipTokenizer(context_length=model.context_length)
    shutil.copyfile(tokenizer.merges_file, Path(out_dir) / BPE_FILE)
    return {"kind": TOKENIZER_KIND, "file": BPE_FILE, "context_length": model.context_length}
