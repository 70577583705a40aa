"""ONNX export of SSAN's image and text encoders, checked against PyTorch with onnxruntime.

``export_onnx(checkpoint, out_dir)`` writes::

    image.onnx   images (B x 3 x H x W float32) -> global, parts, relation
    text.onnx    tokens (B x L int64, right-padded with 0), lengths (B int64)
                 -> global, parts, relation, attention (B x L x K, 0 at padding)
    meta.json    format, fingerprint, checkpoint, arch, vocab, input size, outputs, parity

Batch and caption length are dynamic. The model runs its bidirectional LSTM over
the zero-padded batch, which equals packed sequences only because that LSTM has no
bias. The export does not lean on that: it uses :class:`ExportTextEncoder`, a graph
equal to packing for any LSTM: the forward direction runs on the padded batch
(right padding comes after every real word, so real positions are unaffected), and
the backward direction runs a unidirectional LSTM with the reverse weights over each
caption reversed *within its length* (a gather), whose output is reversed back the
same way. Padding positions hold values that the masks of the max-pool and of the
WAM discard. Parity with PyTorch is checked with onnxruntime on inputs of other
batch sizes and lengths than the tracing ones.

The folder is written whole or not at all (a temporary folder renamed into place);
an existing folder is replaced only when it is empty or holds an earlier export.
"""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ssan._extras import available
from ssan.errors import SsanError
from ssan.models import LEAKY_SLOPE, global_text_max
from ssan.models.layers import stripe_windows
from ssan.search.onnx_backend import FORMAT, IMAGE_FILE, META_FILE, TEXT_FILE, VERSION, OnnxEncoders, read_export_meta

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # largest accepted |onnx - torch|, relative to the output's scale max(1, max |torch|)
TERMS_WITH_PARTS = ("global", "parts", "relation")


def _reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first ``lengths[b]`` steps of each row of ``x`` (B x L x C); padding stays put."""
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # 1 x L
    lengths = lengths.to(x.device).unsqueeze(1)  # B x 1
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # B x L
    return torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(2)))


def _one_direction(lstm: nn.LSTM, suffix: str) -> nn.LSTM:
    """A unidirectional copy of one direction (``""`` or ``"_reverse"``) of a 1-layer LSTM."""
    bias = lstm.bias
    single = nn.LSTM(lstm.input_size, lstm.hidden_size, num_layers=1, bias=bias, batch_first=True)
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if bias else [])
    with torch.no_grad():
        for name in names:
            getattr(single, name).copy_(getattr(lstm, name + suffix))
    return single.to(lstm.weight_ih_l0.device).eval()


class ExportTextEncoder(nn.Module):
    """SSAN's ``encode_text(..., return_attention=True)`` as an ONNX-exportable graph.

    Shares every layer with ``model`` except the LSTM, split into two unidirectional copies.

    Args:
        model: an SSAN (eval mode; its text encoder is a single-layer bidirectional LSTM).
    """

    def __init__(self, model):
        super().__init__()
        encoder = model.text_encoder
        if encoder.lstm.num_layers != 1 or not encoder.lstm.bidirectional or not encoder.lstm.batch_first:
            raise SsanError("ONNX export expects the text encoder's single-layer bidirectional batch-first LSTM")
        self.global_embedding = encoder.global_embedding
        self.part_embedding = encoder.part_embedding
        self.forward_lstm = _one_direction(encoder.lstm, "")
        self.backward_lstm = _one_direction(encoder.lstm, "_reverse")
        self.hidden_dim = encoder.hidden_dim
        self.global_proj = model.global_proj
        self.parts = model.parts
        if model.parts:
            self.part_proj = model.part_proj
            self.word_attention = model.word_attention
            self.relation = model.relation

    def words(self, embedded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """B x L x E embeddings -> B x L x C word features (mean of both directions, real positions)."""
        zeros = embedded.new_zeros(1, embedded.size(0), self.hidden_dim)
        forward, _ = self.forward_lstm(embedded, (zeros, zeros))
        backward, _ = self.backward_lstm(_reverse_within(embedded, lengths), (zeros, zeros))
        return (forward + _reverse_within(backward, lengths)) / 2

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """tokens: B x L int64 (0-padded), lengths: B int64 -> (global, parts, relation, attention)."""
        mask = torch.arange(tokens.size(1), device=tokens.device).unsqueeze(0) < lengths.unsqueeze(1)
        paths = [self.global_embedding(tokens)]
        if self.parts:
            paths.append(self.part_embedding(tokens))
        words = self.words(torch.cat(paths, dim=0), lengths.repeat(len(paths)))
        chunks = words.chunk(len(paths), dim=0)
        global_feat = self.global_proj(global_text_max(chunks[0], mask))
        if not self.parts:
            return (global_feat,)
        part_words, attention = self.word_attention(chunks[1], mask)
        parts = F.leaky_relu(self.part_proj(part_words), LEAKY_SLOPE)
        return global_feat, parts, self.relation(parts), attention


class ExportImageEncoder(nn.Module):
    """``encode_image`` returning a tuple (global[, parts, relation]) for export.

    The horizontal stripes are max-pooled over explicit row windows (those of
    ``adaptive_max_pool2d``), which ONNX supports whatever the map height; the input
    size is fixed at export, so the windows are constants of the graph.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        model = self.model
        fmap = model.backbone(images)  # B x C x h x w
        global_feat = model.global_proj(fmap.amax(dim=(2, 3)))
        if not model.parts:
            return (global_feat,)
        windows = stripe_windows(int(fmap.shape[2]), model.num_parts)
        stripes = torch.stack([fmap[:, :, start:end, :].amax(dim=(2, 3)) for start, end in windows], dim=1)
        parts = F.leaky_relu(model.part_proj(stripes), LEAKY_SLOPE)
        return global_feat, parts, model.relation(parts)


def export_modules(model) -> Tuple[nn.Module, nn.Module]:
    """(image, text) modules to export: SSAN's own graphs for CLIP trunks, the packing-equal ones otherwise."""
    if getattr(model, "pooled", False):
        from ssan.export_clip import ExportFeatures, traceable_copy

        copy = traceable_copy(model)
        image_names, text_names = _output_names(model.parts, False), _output_names(model.parts, True)
        return ExportFeatures(copy, "image", image_names).eval(), ExportFeatures(copy, "text", text_names).eval()
    return ExportImageEncoder(model).eval(), ExportTextEncoder(model).eval()


def _onnx_export(module, args, path: Path, inputs, outputs, dynamic_axes, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )


def _sample_text(vocab_size: int, lengths: list, seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, :length] = torch.randint(1, vocab_size, (length,), generator=generator)
    return tokens, torch.tensor(lengths, dtype=torch.long)


def _output_names(parts: bool, text: bool) -> list:
    names = list(TERMS_WITH_PARTS) if parts else ["global"]
    return names + (["attention"] if text and parts else [])


def _export_graphs(model, out_dir: Path, height: int, width: int, max_length: int, opset: int) -> None:
    if model.arch.get("family") == "open_clip":
        from ssan.clip.export import export_clip_graphs

        tokens, lengths = _sample_text(model.arch["vocab_size"], [min(max_length, 6), min(max_length, 4)], seed=0)
        return export_clip_graphs(model, out_dir, height, width, tokens, lengths, opset, _onnx_export)
    image_out = _output_names(model.parts, text=False)
    text_out = _output_names(model.parts, text=True)
    images = torch.randn(2, 3, height, width)
    image_module, text_module = export_modules(model)
    axes = {"images": {0: "batch"}, **{name: {0: "batch"} for name in image_out}}
    _onnx_export(image_module, (images,), out_dir / IMAGE_FILE, ["images"], image_out, axes, opset)
    length = min(max_length, 6)
    tokens, lengths = _sample_text(model.arch["vocab_size"], [length, max(1, length - 2)], seed=0)
    axes = {"tokens": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, **{name: {0: "batch"} for name in text_out}}
    if "attention" in axes:
        axes["attention"] = {0: "batch", 1: "length"}
    _onnx_export(text_module, (tokens, lengths), out_dir / TEXT_FILE, ["tokens", "lengths"], text_out, axes, opset)


def verify_parity(model, encoders, height: int, width: int, max_length: int, seed: int = 1) -> Tuple[dict, dict]:
    """Compare onnxruntime with PyTorch on fresh inputs (other batch sizes and lengths than traced).

    Returns:
        (max |onnx - torch| per output, max |torch| per output: the scale of each output).
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(3, 3, height, width, generator=generator) * 2 - 1
    length = min(max_length, 12)
    tokens, lengths = _sample_text(model.arch["vocab_size"], [length, max(1, length - 3), 1], seed)
    with torch.inference_mode():
        want = {"image": model.encode_image(images), "text": model.encode_text(tokens, lengths, return_attention=True)}
    got = {"image": encoders.image(images), "text": encoders.text(tokens, lengths)}
    diffs, scales = {}, {}
    for side, feats in want.items():
        for key, value in feats.items():
            diffs[f"{side}/{key}"] = float((got[side][key] - value.float()).abs().max())
            scales[f"{side}/{key}"] = float(value.abs().max())
    return diffs, scales


def export_onnx(checkpoint: Union[str, Path], out_dir: Union[str, Path], opset: int = 17, verify: bool = True) -> dict:
    """Export a checkpoint's encoders to ONNX and check them with onnxruntime.

    Returns:
        the meta dict written to ``out_dir/meta.json`` (``"parity"``: max abs diff per output,
        ``"parity_scale"``: max abs value of the PyTorch output, for relative errors).
    """
    from ssan.checkpoint import load_model
    from ssan.data._io import atomic_directory

    _require_packages(verify)
    checkpoint = Path(checkpoint).expanduser().resolve()
    model, vocab, state = load_model(checkpoint, device="cpu")
    with atomic_directory(out_dir, _may_replace_export) as tmp:
        meta = _write_export(model, vocab, state, checkpoint, tmp, opset, verify)
    log.debug("exported %s to %s", checkpoint, out_dir)
    return meta


def _require_packages(verify: bool) -> None:
    """Fail before any work when the ``export`` extra is missing."""
    needed = ["onnx"] + (["onnxruntime"] if verify else [])
    missing = [name for name in needed if not available(name)]
    if missing:
        raise SsanError(f"ONNX export needs {' and '.join(missing)}: pip install 'ssan[export]'")


def _may_replace_export(path: Path) -> bool:
    if not path.is_dir():
        raise SsanError(f"{path} exists and is not a folder")
    if not any(path.iterdir()):
        return True
    try:
        read_export_meta(path)
    except SsanError:
        raise SsanError(
            f"{path} is not empty and holds no ONNX export; refusing to replace it (choose another --out)"
        ) from None
    return True


def _write_export(model, vocab, state: dict, checkpoint: Path, out_dir: Path, opset: int, verify: bool) -> dict:
    """The graphs and meta.json into ``out_dir``, then the parity check when ``verify``."""
    from ssan.checkpoint import checkpoint_fingerprint
    from ssan.search.encoders import data_settings  # search never imports this module

    height, width, max_length = data_settings(state)
    _export_graphs(model, out_dir, height, width, max_length, opset)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": checkpoint_fingerprint(state),
        "checkpoint": str(checkpoint),
        "arch": dict(model.arch),
        "vocab": list(state["vocab"]),  # the tokenizer follows from arch (model_tokenizer)
        "input": {"height": height, "width": width, "mean": [0.5] * 3, "std": [0.5] * 3},
        "max_length": max_length,
        "opset": opset,
        "outputs": {"image": _output_names(model.parts, False), "text": _output_names(model.parts, True)},
        "parity": None,
        "parity_scale": None,
    }
    if model.arch.get("family") == "open_clip":
        from ssan.clip.export import tokenizer_entry

        meta["tokenizer"] = tokenizer_entry(model, out_dir)
    elif getattr(vocab, "merges_file", None) is not None:  # SSAN-CLIP: its byte pairs travel with the graphs
        shutil.copyfile(vocab.merges_file, out_dir / Path(vocab.merges_file).name)
        meta["bpe_file"] = Path(vocab.merges_file).name
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    if verify:
        meta["parity"], meta["parity_scale"] = verify_parity(model, OnnxEncoders(out_dir), height, width, max_length)
        (out_dir / META_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def parity_report(meta: dict, tolerance: float = TOLERANCE) -> Optional[dict]:
    """The verdict on an export's parity check: ``{"rows": [(output, max |diff|, relative)],
    "worst": largest relative difference, "tolerance", "passed"}``; None when it was not checked.

    A difference is relative to the output's scale, max(1, max |torch|).
    """
    if meta.get("parity") is None:
        return None
    rows = [(name, diff, diff / max(1.0, meta["parity_scale"][name])) for name, diff in meta["parity"].items()]
    worst = max((relative for _, _, relative in rows), default=0.0)
    return {"rows": rows, "worst": worst, "tolerance": tolerance, "passed": worst <= tolerance}
