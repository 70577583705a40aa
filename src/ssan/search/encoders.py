"""The two encoders behind search, on PyTorch or on onnxruntime, with one interface.

An *encoders* object has ``image(images) -> feats`` and ``text(tokens, lengths) ->
feats`` (feature dicts of CPU float32 tensors as ``SSAN.encode_image`` /
``encode_text(return_attention=True)`` return them) and ``backend``. :class:`EncoderInfo`
carries what the index and the queries need besides: the vocabulary, the input size,
the caption length and the fingerprint of the weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import torch

from ssan.data.datasets import pad_tokens
from ssan.errors import SsanError

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx")


@dataclass
class EncoderInfo:
    """What comes with the encoders: vocabulary, input layout and identity of the weights."""

    fingerprint: str  # checkpoint_fingerprint of the weights
    vocab: object  # the model's tokenizer: ssan.data.vocab.Vocabulary or ssan.data.tokenizers.ClipTokenizer
    height: int  # image input height
    width: int  # image input width
    max_length: int  # captions are cut to this many words
    checkpoint: str  # absolute path of the checkpoint the weights come from
    arch: dict  # SSAN constructor arguments
    backend: str  # torch | onnx


class TorchEncoders:
    """SSAN's encoders run by PyTorch (inference mode, no gradients).

    Args:
        model: an SSAN in eval mode.
        device: where the model lives; inputs are moved there, outputs come back to the CPU.
    """

    backend = "torch"

    def __init__(self, model, device: Union[str, torch.device] = "cpu"):
        self.model = model.eval()
        self.device = torch.device(device)

    @torch.inference_mode()
    def image(self, images: torch.Tensor) -> dict:
        """images: B x 3 x H x W (normalised) -> feature dict on the CPU."""
        feats = self.model.encode_image(images.to(self.device, non_blocking=True))
        return {key: value.float().cpu() for key, value in feats.items()}

    @torch.inference_mode()
    def text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        """tokens: B x L ids (0-padded), lengths: B -> feature dict (+ "attention" B x L x K)."""
        feats = self.model.encode_text(tokens.to(self.device), lengths.cpu(), return_attention=True)
        return {key: value.float().cpu() for key, value in feats.items()}


def data_settings(checkpoint_state: dict) -> Tuple[int, int, int]:
    """(height, width, max_length) recorded in a checkpoint's config (defaults when absent)."""
    from ssan.config import DataConfig

    defaults = DataConfig()
    data = (checkpoint_state.get("config") or {}).get("data") or {}
    return (
        int(data.get("height", defaults.height)),
        int(data.get("width", defaults.width)),
        int(data.get("max_length", defaults.max_length)),
    )


def load_torch_encoders(checkpoint: Union[str, Path], device: str = "cpu") -> Tuple[TorchEncoders, EncoderInfo]:
    """Load a checkpoint once for inference; returns (encoders, info)."""
    from ssan.checkpoint import checkpoint_fingerprint, load_model

    path = Path(checkpoint).expanduser().resolve()
    model, vocab, state = load_model(path, device=device)
    height, width, max_length = data_settings(state)
    info = EncoderInfo(
        fingerprint=checkpoint_fingerprint(state),
        vocab=vocab,
        height=height,
        width=width,
        max_length=max_length,
        checkpoint=str(path),
        arch=dict(model.arch),
        backend="torch",
    )
    return TorchEncoders(model, device), info


def load_encoders(
    backend: str = "torch",
    checkpoint: Optional[Union[str, Path]] = None,
    onnx_dir: Optional[Union[str, Path]] = None,
    device: str = "cpu",
    threads: Optional[int] = None,
):
    """Encoders of ``backend`` (torch: from ``checkpoint``; onnx: from an ``ssan export`` folder).

    ``threads`` sets onnxruntime's intra-op threads (torch's are process-wide: torch.set_num_threads).

    Returns:
        (encoders, EncoderInfo).
    """
    if backend not in BACKENDS:
        raise SsanError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        if checkpoint is None:
            raise SsanError("the torch backend needs a checkpoint")
        return load_torch_encoders(checkpoint, device)
    if onnx_dir is None or not (Path(onnx_dir) / "meta.json").is_file():
        where = f"no ONNX export in {onnx_dir}" if onnx_dir is not None else "the onnx backend needs an export folder"
        raise SsanError(f"{where}; create it with `ssan export --checkpoint CKPT --out DIR`")
    from ssan.clip.bpe import export_tokenizer
    from ssan.data.tokenizers import model_tokenizer
    from ssan.data.vocab import Vocabulary
    from ssan.search.onnx_backend import OnnxEncoders

    encoders = OnnxEncoders(onnx_dir, device=device, threads=threads)
    meta = encoders.meta
    info = EncoderInfo(
        fingerprint=meta["fingerprint"],
        vocab=export_tokenizer(onnx_dir, meta)
        if "tokenizer" in meta
        else model_tokenizer(
            meta["arch"],
            Vocabulary(meta["vocab"]),
            int(meta["max_length"]),
            Path(onnx_dir) / Path(meta["bpe_file"]).name if isinstance(meta.get("bpe_file"), str) else None,
        ),
        height=int(meta["input"]["height"]),
        width=int(meta["input"]["width"]),
        max_length=int(meta["max_length"]),
        checkpoint=meta["checkpoint"],
        arch=meta["arch"],
        backend="onnx",
    )
    return encoders, info


def pad_id_lists(token_lists: Sequence[Sequence[int]], max_length: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists (each cut to ``max_length``) into (B x L long tokens, B long lengths).

    Every list must hold at least one id; L is the longest (cut) length (see
    :func:`ssan.data.pad_tokens`, which pads tensors).
    """
    cut = [list(ids)[:max_length] for ids in token_lists]
    if not cut or min(len(ids) for ids in cut) < 1:
        raise SsanError("every caption must keep at least one known word")
    return pad_tokens([torch.tensor(ids, dtype=torch.long) for ids in cut])


def image_transform(info: EncoderInfo):
    """The evaluation transform (resize or, for CLIP, letterbox; tensor; normalise) at the model's input size."""
    from ssan.models.families import gallery_transform

    return gallery_transform(info.arch, info.height, info.width)
