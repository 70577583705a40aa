"""The model families a checkpoint can hold, in one registry: SSAN (ours) and third-party ones.

A checkpoint's ``arch["family"]`` names its family (absent: ``ssan``). A family's entry is a
:class:`ModelFamily`: a loader ``(state, device, source) -> (model, vocabulary)`` (the model has
``encode_image`` / ``encode_text`` returning feature dicts and an ``arch``; the vocabulary turns
query text into ids: ``words_of`` / ``encode_tokens`` / ``encode`` / ``decode``) and the
gallery transform ``(arch, height, width, uint8) -> PIL image -> tensor``. Everything that takes
``--checkpoint`` loads through :func:`load_family_model`, so a family registered from user code
(``register_model_family("mine", loader)``) works with index, search, serve, test and export.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

from ssan.errors import CheckpointError
from ssan.registry import Registry


def describe_encoder(arch: dict) -> dict:
    """What an index records about its encoder: the family and, for open_clip, the model and preprocessing."""
    family = family_of(arch)
    if family == DEFAULT_FAMILY:
        return {"family": family, "backbone": arch.get("backbone"), "parts": arch.get("parts")}
    return {"family": family, "model": arch.get("model"), "preprocess": arch.get("preprocess")}


def _resize(arch: dict, height: int, width: int, uint8: bool):
    from ssan.data.transforms import build_transforms

    return build_transforms(height, width, train=False, uint8=uint8)


@dataclass(frozen=True)
class ModelFamily:
    """How to load a family's checkpoints and prepare gallery images for its models."""

    load: Callable  # (state, device, source) -> (model in eval mode, vocabulary)
    transform: Callable = _resize  # (arch, height, width, uint8) -> PIL image -> 3 x H x W tensor


MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family", CheckpointError)


def register_model_family(name: str, load: Callable, transform: Callable = _resize) -> ModelFamily:
    """Add a family: ``load(state, device, source) -> (model, vocabulary)`` and its gallery transform."""
    return MODEL_FAMILIES.register(name, ModelFamily(load, transform))


DEFAULT_FAMILY = "ssan"


def family_of(arch) -> str:
    """The family named by a checkpoint's ``arch`` (``ssan`` when it names none)."""
    return arch.get("family", DEFAULT_FAMILY) if isinstance(arch, dict) else DEFAULT_FAMILY


def load_family_model(state: dict, device="cpu", source: str = "checkpoint") -> Tuple[object, object]:
    """(model in eval mode on ``device``, vocabulary) of a loaded checkpoint dict, by its family."""
    family = family_of(state["arch"])
    if family not in MODEL_FAMILIES:
        raise CheckpointError(f"{source}: unknown model family {family!r}; valid: {', '.join(MODEL_FAMILIES)}")
    return MODEL_FAMILIES.get(family).load(state, device, source)


def gallery_transform(arch: dict, height: int, width: int, uint8: bool = False):
    """The evaluation transform of a family's model (SSAN: resize to ``height x width``)."""
    family = family_of(arch)
    entry = MODEL_FAMILIES.get(family) if family in MODEL_FAMILIES else MODEL_FAMILIES.get(DEFAULT_FAMILY)
    return entry.transform(arch, height, width, uint8)


def _load_ssan(state: dict, device, source: str):
    from ssan.checkpoint import model_from_checkpoint
    from ssan.data.vocab import Vocabulary

    vocab_size = state["arch"].get("vocab_size")
    if vocab_size is not None and vocab_size != len(state["vocab"]):
        raise CheckpointError(
            f"{source}: its vocabulary has {len(state['vocab'])} entries but the model expects {vocab_size}"
        )
    from ssan.data.tokenizers import CLIP_CONTEXT, model_tokenizer

    model = model_from_checkpoint(state, device=device, source=source)
    max_length = ((state.get("config") or {}).get("data") or {}).get("max_length", CLIP_CONTEXT)
    return model, model_tokenizer(model.arch, Vocabulary(list(state["vocab"])), max_length)  # SSAN-CLIP: BPE


def _load_open_clip(state: dict, device, source: str):
    from ssan.clip.checkpoint import clip_from_state  # needs the `clip` extra only when such a file is loaded

    return clip_from_state(state, device=device, source=source)


def _clip_transform(arch: dict, height: int, width: int, uint8: bool):
    from ssan.clip.model import clip_transform

    return clip_transform(arch, uint8=uint8)


register_model_family(DEFAULT_FAMILY, _load_ssan)
register_model_family("open_clip", _load_open_clip, _clip_transform)
