"""CLIP models in ssan's checkpoint schema: written by ``ssan import-clip``, read by every command.

A CLIP checkpoint is an ordinary ssan checkpoint (:mod:`ssan.checkpoint`) whose ``arch`` says
what to build::

    {"family": "open_clip", "model": "ViT-B-16", "config": open_clip's model configuration,
     "image_size": [H, W], "context_length": 77, "mean": [...], "std": [...],
     "preprocess": "letterbox" | "stretch", "weights": where they came from,
     "weights_fingerprint": SHA-256 prefix of the tensors}

``model`` holds the open_clip model's state dict, ``vocab`` is empty (the BPE tokenizer ships
with open_clip) and ``config`` holds the data settings every command reads (input size, caption
length in BPE pieces = context - 2). Loading rebuilds the model from the recorded configuration,
so neither the model registry nor the network is needed, and checks it against the weights on
the ``meta`` device before allocating anything.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import torch

from ssan.clip.model import PREPROCESS, ClipRetrieval, image_size_of
from ssan.clip.weights import ClipWeightsError, LoadedClip, build_model, first_mismatch, resolve_weights

log = logging.getLogger(__name__)

FAMILY = "open_clip"


def clip_arch(loaded: LoadedClip, preprocess: str, fingerprint: str) -> dict:
    """The ``arch`` entry of a CLIP checkpoint (plain data)."""
    if preprocess not in PREPROCESS:
        raise ClipWeightsError(f"unknown preprocessing {preprocess!r}; valid: {', '.join(PREPROCESS)}")
    return {
        "family": FAMILY,
        "model": loaded.name,
        "config": loaded.config,
        "image_size": list(image_size_of(loaded.config)),
        "context_length": int(loaded.config.get("text_cfg", {}).get("context_length", 77)),
        "mean": [float(v) for v in loaded.mean],
        "std": [float(v) for v in loaded.std],
        "preprocess": preprocess,
        "weights": loaded.source,
        "weights_fingerprint": fingerprint,
    }


def clip_state(loaded: LoadedClip, preprocess: str = "letterbox") -> dict:
    """The checkpoint dict (without the format marker) of a loaded open_clip model."""
    from ssan.checkpoint import checkpoint_fingerprint

    weights = {key: value.detach().float().cpu().contiguous() for key, value in loaded.model.state_dict().items()}
    arch = clip_arch(loaded, preprocess, checkpoint_fingerprint({"model": weights}))
    height, width = arch["image_size"]
    data = {"height": height, "width": width, "max_length": arch["context_length"] - 2, "eval_batch_size": 64}
    return {"arch": arch, "model": weights, "vocab": [], "config": {"data": data}, "epoch": None, "metrics": {}}


def import_clip(
    model_name: str,
    out: Union[str, Path],
    weights: Optional[Union[str, Path]] = None,
    pretrained: Optional[str] = None,
    preprocess: str = "letterbox",
    quick_gelu: Optional[bool] = None,
) -> dict:
    """Load an open_clip model's published weights and write them as an ssan checkpoint at ``out``.

    Returns:
        the checkpoint's ``arch``.
    """
    from ssan.checkpoint import save_checkpoint

    if preprocess not in PREPROCESS:
        raise ClipWeightsError(f"unknown preprocessing {preprocess!r}; valid: {', '.join(PREPROCESS)}")
    loaded = resolve_weights(model_name, weights=weights, pretrained=pretrained, quick_gelu=quick_gelu)
    state = clip_state(loaded, preprocess)
    save_checkpoint(out, state)
    log.debug("wrote %s (%s, %s weights)", out, model_name, loaded.source)
    return state["arch"]


def _check_arch(arch: dict, source: str) -> None:
    missing = [k for k in ("model", "config", "image_size", "context_length", "mean", "std") if k not in arch]
    if missing:
        raise ClipWeightsError(f"{source}: its open_clip arch lacks {', '.join(missing)}")
    if arch.get("preprocess", "letterbox") not in PREPROCESS:
        raise ClipWeightsError(f"{source}: unknown preprocessing {arch.get('preprocess')!r}")
    if len(arch["mean"]) != 3 or len(arch["std"]) != 3 or min(arch["std"]) <= 0:
        raise ClipWeightsError(f"{source}: its image mean and std must be 3 values each (std positive)")


def clip_from_state(state: dict, device: Union[str, torch.device] = "cpu", source: str = "checkpoint"):
    """(ClipRetrieval on ``device`` in eval mode, ClipTokenizer) of a CLIP checkpoint dict."""
    from ssan.clip.bpe import ClipTokenizer

    arch = state["arch"]
    _check_arch(arch, source)
    try:
        with torch.device("meta"):  # a hostile configuration costs nothing here
            skeleton = build_model(arch["config"])
    except ClipWeightsError as exc:
        raise ClipWeightsError(f"{source}: {exc}") from None
    mismatch = first_mismatch(skeleton.state_dict(), state["model"])
    if mismatch is not None:
        raise ClipWeightsError(f"{source}: weights do not fit its open_clip model {arch['model']}: {mismatch}")
    clip = build_model(arch["config"])
    clip.load_state_dict(state["model"], strict=True)
    tokenizer = ClipTokenizer(context_length=int(arch["context_length"]))
    model = ClipRetrieval(clip, arch, tokenizer.sot_id, tokenizer.eot_id)
    return model.to(device).eval(), tokenizer


def is_clip_arch(arch: dict) -> bool:
    return isinstance(arch, dict) and arch.get("family") == FAMILY
