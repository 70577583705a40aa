"""Loading open_clip models and their published weights safely.

:func:`load_clip_weights` builds an open_clip model by name and fills it with weights from

- a local file in any published layout (:func:`read_state_dict`): OpenAI's TorchScript archive
  (``ViT-B-16.pt``, read with ``torch.jit.load``: no pickled Python, only its state dict is kept),
  an open_clip state dict (``.bin`` / ``.pt``, read with ``weights_only=True``), ``.safetensors``,
  a state dict wrapped in ``{"state_dict": ...}``, keys with ``module.`` / ``_orig_mod.`` prefixes;
- or an open_clip pretrained tag / ``hf-hub:`` name, fetched by open_clip's own download code.

Every refusal is a :class:`ClipWeightsError` with one line: an unknown model name (with close
names), a file of another architecture (the first mismatching key and both shapes), a truncated
file, a pickle that would run code, a TorchScript archive that is not a CLIP model, an offline
download (what to fetch and where to put it).
"""

from __future__ import annotations

import copy
import difflib
import logging
import pickle
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ssan._extras import require
from ssan.errors import CheckpointError
from ssan.models._state_dict import strip_prefixes

log = logging.getLogger(__name__)

HF_PREFIX = "hf-hub:"
LOCAL_PREFIX = "local-dir:"  # a folder with open_clip_config.json (what a hub repository holds), read offline
TORCHSCRIPT_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")  # OpenAI archives' scalar buffers
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default normalisation (OpenAI's)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_KEYS = ("visual.", "text_projection", "text.text_projection")  # what every CLIP state dict has


class ClipWeightsError(CheckpointError):
    """An open_clip model name, weights file or pretrained tag that cannot be used."""


def open_clip_module():
    """``import open_clip`` behind the project's guard for the ``clip`` extra."""
    return require("open_clip", "pretrained vision-language encoders need open_clip", "clip")


def model_config(model_name: str) -> dict:
    """open_clip's configuration of a model (a copy); an unknown name lists close ones.

    ``hf-hub:org/repo`` names are read from the hub by open_clip (offline: one line saying so);
    ``local-dir:DIR`` names from DIR/open_clip_config.json (a hub repository's files, fetched).
    """
    open_clip = open_clip_module()
    if model_name.startswith(HF_PREFIX):
        from ssan.clip.pretrained import hub_config

        return hub_config(model_name)
    if model_name.startswith(LOCAL_PREFIX):
        return _local_config(open_clip, model_name)
    config = open_clip.get_model_config(model_name)
    if config is None:
        names = open_clip.list_models()
        close = difflib.get_close_matches(model_name, names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}" if close else f"e.g. {', '.join(names[:5])}"
        raise ClipWeightsError(f"unknown open_clip model {model_name!r} ({hint}; all: open_clip.list_models())")
    return config


def _local_config(open_clip, model_name: str) -> dict:
    """The configuration of a ``local-dir:DIR`` name: DIR/open_clip_config.json, read by open_clip."""
    try:
        config = open_clip.get_model_config(model_name)
    except (OSError, ValueError) as exc:  # missing file, bad JSON
        raise ClipWeightsError(f"{model_name}: cannot read its open_clip_config.json ({_first_line(exc)})") from None
    if not isinstance(config, dict) or "vision_cfg" not in config or "text_cfg" not in config:
        raise ClipWeightsError(f"{model_name}: its open_clip_config.json holds no model configuration")
    return config


def check_supported(model_name: str, config: dict) -> None:
    """Refuse what ssan cannot run offline: CoCa, Hugging Face text towers and tokenizers."""
    text = config.get("text_cfg", {})
    if "multimodal_cfg" in config:
        raise ClipWeightsError(f"open_clip model {model_name} is a CoCa captioner; ssan runs dual encoders (CLIP)")
    hub = text.get("hf_tokenizer_name") or text.get("hf_model_name")
    if hub:
        raise ClipWeightsError(
            f"open_clip model {model_name} needs the Hugging Face tokenizer or text model {hub}, which ssan does "
            "not load (only OpenAI's BPE tokenizer, shipped with open_clip, works offline)"
        )


def build_model(config: dict):
    """An open_clip model with random weights from its configuration (the classes open_clip picks)."""
    open_clip = open_clip_module()
    config = copy.deepcopy(config)
    custom_text = config.pop("custom_text", False)
    model_class = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    try:
        return model_class(**config).eval()
    except (TypeError, ValueError, KeyError) as exc:
        raise ClipWeightsError(f"open_clip cannot build a model from configuration {config}: {exc}") from None


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip with a ``code/`` folder and ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in f"/{n}" for n in names) and any(n.endswith("constants.pkl") for n in names)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _read_torchscript(path: Path) -> dict:
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a damaged archive makes the TorchScript reader raise RuntimeError and others
        raise ClipWeightsError(f"weights file {path} is truncated or corrupted: {_first_line(exc)}") from None
    state = {k: v for k, v in module.state_dict().items() if k not in TORCHSCRIPT_EXTRA_KEYS}
    if not any(k.startswith(CLIP_KEYS) for k in state):
        first = next(iter(state), "no weights at all")
        raise ClipWeightsError(
            f"TorchScript archive {path} is not a CLIP model (no visual tower or text projection; first key: {first})"
        )
    return state


def _read_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError...
        raise ClipWeightsError(f"weights file {path} is truncated or corrupted: {_first_line(exc)}") from None


def _read_pickle(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning)
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        from ssan.checkpoint import _unpickling_reason

        raise ClipWeightsError(
            f"weights file {path} was refused: loading it would run code or build objects that are not "
            f"plain tensors ({_unpickling_reason(exc)})"
        ) from None
    except Exception as exc:  # a truncated zip or pickle makes torch raise almost any type
        raise ClipWeightsError(f"weights file {path} is truncated or corrupted: {_first_line(exc)}") from None


def read_state_dict(path: Union[str, Path]) -> dict:
    """The state dict of a weights file in any published layout (see the module docstring).

    Returns:
        ``{key: tensor}`` with wrapper prefixes removed (keys as the file's model names them).
    """
    path = Path(path)
    if not path.is_file():
        raise ClipWeightsError(f"weights file not found: {path}")
    if path.stat().st_size == 0:
        raise ClipWeightsError(f"weights file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    elif _is_torchscript(path):
        state = _read_torchscript(path)
    else:
        state = _read_pickle(path)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ClipWeightsError(f"weights file {path} holds no state dict (a dict of named tensors)")
    return strip_prefixes(state)


def first_mismatch(expected: dict, weights: dict) -> Optional[str]:
    """The first key (in the model's order) whose shape differs or is absent, in words; None when all fit."""
    for key, value in expected.items():
        if key not in weights:
            return f"lacks {key} (shape {tuple(value.shape)} in the model)"
        if tuple(weights[key].shape) != tuple(value.shape):
            return f"{key} is {tuple(weights[key].shape)} in the file but {tuple(value.shape)} in the model"
    extra = next((key for key in weights if key not in expected), None)
    return f"has {extra}, which the model does not" if extra is not None else None


def fit_state_dict(model, state: dict) -> dict:
    """``state`` converted by open_clip's own helpers to ``model``'s layout (third-party and older formats)."""
    open_clip_module()
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = convert_state_dict(model, dict(state))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in state and own is not None and state[name].ndim != own.ndim and state[name].numel() == own.numel():
            state[name] = state[name].reshape(own.shape)
    return state


def load_state_into(model, state: dict, source: str, model_name: str):
    """Load ``state`` strictly into ``model``; ClipWeightsError with the first mismatch otherwise."""
    state = fit_state_dict(model, state)
    expected = model.state_dict()
    derived = {name for name, _ in model.named_buffers() if name not in expected}  # e.g. attn_mask
    state = {key: value for key, value in state.items() if key not in derived}  # TorchScript saves them too
    mismatch = first_mismatch(expected, state)
    if mismatch is not None:
        raise ClipWeightsError(f"{source} does not fit open_clip model {model_name}: {mismatch}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def configured(model_name: str, quick_gelu: bool = False) -> dict:
    """The model's configuration, checked as supported, with QuickGELU forced when asked."""
    config = model_config(model_name)
    check_supported(model_name, config)
    if quick_gelu:
        config["quick_gelu"] = True
    return config


def load_clip_weights(
    model_name: str,
    weights: Optional[Union[str, Path]] = None,
    pretrained: Optional[str] = None,
    quick_gelu: Optional[bool] = None,
):
    """An open_clip model in eval mode with published weights (exactly one of ``weights`` / ``pretrained``).

    Args:
        model_name: any open_clip model name (``ViT-B-16``, ``RN50``...).
        weights: a local weights file in any published layout.
        pretrained: an open_clip pretrained tag (``openai``, ``laion2b_s34b_b88k``...) or an
            ``hf-hub:org/repo`` name; downloaded by open_clip (its cache) when online.
        quick_gelu: use QuickGELU activations (OpenAI's models); None: True for a TorchScript
            archive (OpenAI's layout) or a tag trained with it, else the model config's choice.

    Returns:
        the open_clip model (``encode_image`` / ``encode_text``).
    """
    return resolve_weights(model_name, weights, pretrained, quick_gelu).model


@dataclass
class LoadedClip:
    """An open_clip model with what a checkpoint records about it."""

    model: object  # open_clip CLIP / CustomTextCLIP, eval mode
    name: str  # the open_clip model name (or hf-hub: name)
    config: dict  # its open_clip configuration (JSON data: rebuilds the model offline)
    mean: tuple  # image normalisation the weights were trained with
    std: tuple
    source: str  # the weights file or pretrained tag, for messages and the checkpoint


def resolve_weights(model_name, weights=None, pretrained=None, quick_gelu=None) -> LoadedClip:
    """:func:`load_clip_weights` with the configuration and normalisation that go with the model."""
    if (weights is None) == (pretrained is None):
        raise ClipWeightsError("give exactly one source of weights: a weights file or a pretrained tag")
    if pretrained is not None:
        from ssan.clip.pretrained import fetch_pretrained

        path, mean, std, tag_gelu = fetch_pretrained(model_name, pretrained)
        quick_gelu = tag_gelu if quick_gelu is None else quick_gelu
        source = pretrained
    else:
        path, mean, std, source = Path(weights).expanduser(), OPENAI_MEAN, OPENAI_STD, str(weights)
        if quick_gelu is None:
            quick_gelu = _is_torchscript(path)
    config = configured(model_name, quick_gelu=bool(quick_gelu))
    state = read_state_dict(path)
    model = load_state_into(build_model(config), state, f"weights {source}", model_name)
    return LoadedClip(model, model_name, config, tuple(mean), tuple(std), source)
