"""open_clip's pretrained weights, fetched by open_clip's own download code (its cache).

Offline (or when the hub refuses), every failure is one line naming the file to fetch, where
from, and how to import it as a local file instead (``ssan import-clip MODEL --weights FILE``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

from ssan.clip.weights import HF_PREFIX, OPENAI_MEAN, OPENAI_STD, ClipWeightsError, model_config, open_clip_module

HF_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's default file name in a hub repository


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else exc.__class__.__name__


def _offline(what: str, where: str, model_name: str, exc: BaseException) -> ClipWeightsError:
    return ClipWeightsError(
        f"cannot download {what} ({_first_line(exc)}); on a machine that is online fetch {where}, copy it "
        f"here and run `ssan import-clip {model_name} --weights FILE`"
    )


def _hub_url(repo: str, filename: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/main/{filename}"


def hub_config(name: str) -> dict:
    """The model configuration of an ``hf-hub:org/repo`` name (``open_clip_config.json``), via open_clip."""
    open_clip = open_clip_module()
    repo = name[len(HF_PREFIX) :]
    try:
        config = open_clip.get_model_config(name)
    except Exception as exc:  # huggingface_hub raises its own offline / not-found errors
        raise ClipWeightsError(
            f"cannot download the configuration of {name} ({_first_line(exc)}); on a machine that is online "
            f"fetch {_hub_url(repo, 'open_clip_config.json')} and {_hub_url(repo, HF_WEIGHTS)} into a folder "
            f"DIR, copy it here and run `ssan import-clip local-dir:DIR --weights DIR/{HF_WEIGHTS}`"
        ) from None
    if not isinstance(config, dict) or "vision_cfg" not in config:
        raise ClipWeightsError(f"{name} has no open_clip model configuration (open_clip_config.json)")
    return config


def _tag_config(model_name: str, tag: str) -> dict:
    open_clip = open_clip_module()
    model_config(model_name)  # an unknown model name is reported as such, not as an unknown tag
    config = open_clip.get_pretrained_cfg(model_name, tag)
    if not config:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise ClipWeightsError(
            f"open_clip has no pretrained tag {tag!r} for {model_name} (its tags: {', '.join(tags) or 'none'})"
        )
    return config


def _where(config: dict) -> str:
    hub = config.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/name/" names the repository's default file
        return _hub_url(repo, filename or HF_WEIGHTS)
    return config.get("url", "") or "the weights from the model's publisher"


def fetch_pretrained(model_name: str, pretrained: str) -> Tuple[Path, tuple, tuple, bool]:
    """Download (or find in open_clip's cache) the weights of a tag or ``hf-hub:`` name.

    Returns:
        (local weights file, image mean, image std, whether the weights were trained with QuickGELU).
    """
    open_clip_module()
    from open_clip.pretrained import download_pretrained, download_pretrained_from_hf

    if pretrained.startswith(HF_PREFIX):
        repo = pretrained[len(HF_PREFIX) :]
        try:
            path = download_pretrained_from_hf(repo)
        except Exception as exc:
            raise _offline(f"the weights of {pretrained}", _hub_url(repo, HF_WEIGHTS), model_name, exc) from None
        return Path(path), OPENAI_MEAN, OPENAI_STD, False
    config = _tag_config(model_name, pretrained)
    try:
        path = download_pretrained(config)
    except Exception as exc:  # urllib's URLError, huggingface_hub's errors, a checksum mismatch...
        what = f"the {pretrained!r} weights of {model_name}"
        raise _offline(what, _where(config), model_name, exc) from None
    if not path:
        raise ClipWeightsError(f"open_clip has no download for the {pretrained!r} weights of {model_name}")
    mean, std = config.get("mean", OPENAI_MEAN), config.get("std", OPENAI_STD)
    return Path(path), tuple(mean), tuple(std), bool(config.get("quick_gelu", False))
