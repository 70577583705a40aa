"""The one seam through which pretrained CLIP weights enter the SSAN-CLIP trunks.

:func:`clip_state_dict` returns the whole CLIP model's weights with open_clip's key names
(``visual.*`` for the image tower; ``token_embedding.weight``, ``positional_embedding``,
``transformer.*``, ``ln_final.*``, ``text_projection`` for the text tower); each trunk takes its
own keys from it and loads them strictly. Files: whatever :func:`ssan.clip.weights.read_state_dict`
reads (an open_clip state dict, wrapped or with ``module.`` prefixes, ``.safetensors``, OpenAI's
TorchScript archive), or a checkpoint written by ``ssan import-clip``. A missing or unreadable
file is one line naming it; never random weights.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Union

import torch

from ssan.models._state_dict import strip_prefixes
from ssan.models.backbones import PretrainedWeightsError

OPENAI_TAG = "openai"


def _download_hint(model_name: str) -> str:
    try:
        import open_clip

        url = open_clip.get_pretrained_url(model_name.replace("-quickgelu", ""), OPENAI_TAG)
    except Exception:  # an unknown name or an open_clip without the table: no hint beyond the advice
        url = ""
    where = f" (OpenAI's: {url})" if url else ""
    return f"download the {model_name} CLIP weights{where} and pass --set model.pretrained=/path/to/file"


def _read(path: Path) -> dict:
    """The file's state dict: any published layout (ssan.clip's reader), or an ``ssan import-clip`` checkpoint."""
    from ssan.checkpoint import FORMAT, load_checkpoint
    from ssan.clip.weights import ClipWeightsError, read_state_dict

    try:
        return read_state_dict(path)
    except ClipWeightsError as error:
        if not zipfile.is_zipfile(path):
            raise
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise error from None
        if not (isinstance(state, dict) and state.get("format") == FORMAT):
            raise error from None
        state = load_checkpoint(path)  # validated as every ssan checkpoint
        if (state.get("arch") or {}).get("family") != "open_clip":
            message = f"{path} is an ssan checkpoint but not of CLIP weights (see ssan import-clip)"
            raise PretrainedWeightsError(message) from None
        return state["model"]


def clip_state_dict(source: Union[bool, str, Path], model_name: str) -> dict:
    """open_clip-layout weights of the CLIP model in ``source`` (a file path).

    Raises :class:`PretrainedWeightsError` (one line) when ``source`` is not a readable file of
    CLIP weights; ``True`` (no file named) says which file to fetch.
    """
    if source is True or not str(source).strip():
        raise PretrainedWeightsError(f"model.pretrained names no file: {_download_hint(model_name)}")
    path = Path(str(source)).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"CLIP weights file not found: {path}; {_download_hint(model_name)}")
    try:
        state = _read(path)
    except PretrainedWeightsError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise PretrainedWeightsError(
            f"cannot read CLIP weights {path}: {type(exc).__name__}: {text[0] if text else ''}"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise PretrainedWeightsError(f"CLIP weights {path} do not hold a state dict of tensors")
    state = strip_prefixes(state)
    if "visual.conv1.weight" not in state:
        raise PretrainedWeightsError(f"{path} holds no CLIP ViT image tower (no visual.conv1.weight)")
    return state


def load_strict(module: torch.nn.Module, state: dict, where: str) -> None:
    """Load ``state`` into ``module``; the first missing, unexpected or mis-shaped key is one line."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        key = wrong[0]
        raise PretrainedWeightsError(
            f"{where}: {key} has shape {tuple(state[key].shape)} in the file but "
            f"{tuple(own[key].shape)} in the model (another CLIP architecture?)"
        )
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise PretrainedWeightsError(f"{where} do not fit the model: {detail}")
    module.load_state_dict(state)
