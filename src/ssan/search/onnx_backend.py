"""The search backend on onnxruntime: the encoders of an ``ssan export`` folder.

An export folder holds ``image.onnx``, ``text.onnx`` and ``meta.json`` (see :mod:`ssan.export`,
which writes it); :class:`OnnxEncoders` runs them with the interface of the torch encoders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from ssan._extras import require
from ssan.errors import SsanError

FORMAT = "ssan-onnx"
VERSION = 1
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
META_FILE = "meta.json"


def read_export_meta(onnx_dir: Union[str, Path]) -> dict:
    """Read and check the ``meta.json`` of an export folder."""
    path = Path(onnx_dir) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SsanError(f"cannot read ONNX export description {path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise SsanError(f"{path} is not an ssan ONNX export (version {VERSION})")
    return meta


def _session(path: Path, providers: list, threads: Optional[int] = None):
    ort = require("onnxruntime", "the onnx backend needs onnxruntime", "export")
    if not path.is_file():
        raise SsanError(f"ONNX model {path} not found; run `ssan export`")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


class OnnxEncoders:
    """The exported encoders on onnxruntime, with the interface of the torch encoders.

    Args:
        onnx_dir: folder written by :func:`ssan.export.export_onnx`.
        device: ``cpu``, or ``cuda`` to prefer onnxruntime's CUDA provider when installed.
        threads: onnxruntime intra-op threads (None: its default, one per core).
    """

    backend = "onnx"

    def __init__(self, onnx_dir: Union[str, Path], device: str = "cpu", threads: Optional[int] = None):
        import onnxruntime as ort

        onnx_dir = Path(onnx_dir)
        self.meta = read_export_meta(onnx_dir)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.image_session = _session(onnx_dir / IMAGE_FILE, providers, threads)
        self.text_session = _session(onnx_dir / TEXT_FILE, providers, threads)

    def image(self, images) -> dict:
        """images: B x 3 x H x W (tensor or array) -> feature dict of CPU tensors."""
        feed = {"images": np.ascontiguousarray(_numpy(images), dtype=np.float32)}
        values = self.image_session.run(self.meta["outputs"]["image"], feed)
        return {name: torch.from_numpy(v) for name, v in zip(self.meta["outputs"]["image"], values)}

    def text(self, tokens, lengths) -> dict:
        """tokens: B x L ids (0-padded), lengths: B -> feature dict (+ "attention")."""
        feed = {
            "tokens": np.ascontiguousarray(_numpy(tokens), dtype=np.int64),
            "lengths": np.ascontiguousarray(_numpy(lengths), dtype=np.int64),
        }
        values = self.text_session.run(self.meta["outputs"]["text"], feed)
        return {name: torch.from_numpy(v) for name, v in zip(self.meta["outputs"]["text"], values)}


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
