"""Pretrained vision-language encoders (open_clip) behind ssan's checkpoints, search and export.

The ``clip`` extra (``pip install 'ssan[clip]'``). In a notebook::

    from ssan.clip import load_clip_weights, import_clip
    model = load_clip_weights("ViT-B-16", weights="ViT-B-16.pt")       # an open_clip model
    import_clip("ViT-B-16", "clip-b16.pt", weights="ViT-B-16.pt")      # an ssan checkpoint

Names are imported lazily: :mod:`ssan.clip.bpe` (the tokenizer of the ONNX query path) needs
neither torch nor open_clip.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClipWeightsError": "ssan.clip.weights",
    "LoadedClip": "ssan.clip.weights",
    "load_clip_weights": "ssan.clip.weights",
    "read_state_dict": "ssan.clip.weights",
    "resolve_weights": "ssan.clip.weights",
    "model_config": "ssan.clip.weights",
    "build_model": "ssan.clip.weights",
    "ClipRetrieval": "ssan.clip.model",
    "Letterbox": "ssan.clip.model",
    "clip_transform": "ssan.clip.model",
    "ClipTokenizer": "ssan.clip.bpe",
    "import_clip": "ssan.clip.checkpoint",
    "clip_from_state": "ssan.clip.checkpoint",
    "is_clip_arch": "ssan.clip.checkpoint",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssan.clip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
