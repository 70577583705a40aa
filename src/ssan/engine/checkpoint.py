"""One checkpoint schema of plain data, written atomically and loaded safely.

Schema (every value is a tensor, a number, a string, a list or a dict of those)::

    {"format": "ssan-checkpoint", "version": 1,
     "arch": model.arch, "model": state_dict, "vocab": [words],
     "dataset": {"name", "num_classes", "vocab_size"}, "config": Config.to_dict(),
     "epoch": completed epochs, "metrics": {...}, "best": {...} or None,
     # training state, absent from inference-only files:
     "criterion": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": {...}}

Loading always uses ``torch.load(weights_only=True)``: a file that would need to
unpickle arbitrary objects is refused before any of its code can run.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

from ssan.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT = "ssan-checkpoint"
VERSION = 1
TRAINING_KEYS = ("criterion", "optimizer", "scheduler", "scaler", "rng")
REQUIRED_KEYS = ("arch", "model", "vocab")

PathLike = Union[str, os.PathLike]


def strip_prefixes(state_dict: dict) -> dict:
    """Remove ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) key prefixes."""
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix):]
        cleaned[key] = value
    return cleaned


def save_checkpoint(path: PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    A process killed at any moment leaves either the previous file or the new one, never a
    half-written file under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    """Load and validate a checkpoint; every failure is a :class:`CheckpointError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(
            f"checkpoint {path} was refused: it needs to unpickle objects that are not plain data "
            f"(unsafe or not an ssan checkpoint): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ssan checkpoint (no '{FORMAT}' format marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state.get('version')!r}; this ssan reads {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return state


def inference_state(state: dict) -> dict:
    """The checkpoint without its training-only entries (optimizer, classifiers, RNG...)."""
    return {key: value for key, value in state.items() if key not in TRAINING_KEYS}


def model_from_checkpoint(state: dict, device: Union[str, torch.device] = "cpu", source: str = "checkpoint"):
    """Build the model described by ``state['arch']`` and load its weights strictly."""
    from ssan.models import SSAN

    arch = dict(state["arch"])
    arch["pretrained"] = False  # the checkpoint carries every weight
    try:
        model = SSAN(**arch)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot build the model from its architecture {arch}: {exc}") from None
    weights = strip_prefixes(state["model"])
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CheckpointError(f"{source}: weights do not match the architecture: {' '.join(lines[1:3])}") from None
    return model.to(device).eval()


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[Any, Any, dict]:
    """Load a checkpoint for inference.

    Returns:
        ``(model, vocab, info)``: the SSAN model in eval mode on ``device``, its
        :class:`ssan.data.vocab.Vocabulary`, and the checkpoint without training state.
    """
    from ssan.data.vocab import Vocabulary

    state = load_checkpoint(path)
    vocab_size = state["arch"].get("vocab_size")
    if vocab_size is not None and vocab_size != len(state["vocab"]):
        raise CheckpointError(
            f"checkpoint {path}: its vocabulary has {len(state['vocab'])} entries but the model expects {vocab_size}"
        )
    model = model_from_checkpoint(state, device=device, source=f"checkpoint {path}")
    return model, Vocabulary(list(state["vocab"])), inference_state(state)


def check_compatible(state: dict, *, vocab: Optional[list] = None, arch: Optional[dict] = None, source: str = "") -> None:
    """Refuse a checkpoint whose vocabulary or architecture differs from what is expected."""
    where = f"checkpoint {source}" if source else "checkpoint"
    if vocab is not None and list(state["vocab"]) != list(vocab):
        theirs, ours = list(state["vocab"]), list(vocab)
        diff = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
        raise CheckpointError(
            f"{where} was trained with a different vocabulary ({len(theirs)} words vs {len(ours)} here; "
            f"first difference at id {diff})"
        )
    if arch is not None:
        differences = [
            f"{key}: {state['arch'].get(key)!r} vs {arch.get(key)!r}"
            for key in sorted(set(state["arch"]) | set(arch))
            if key != "pretrained" and state["arch"].get(key) != arch.get(key)
        ]
        if differences:
            raise CheckpointError(f"{where} has a different architecture ({'; '.join(differences)})")


def checkpoint_fingerprint(source: Union[PathLike, dict]) -> str:
    """A short SHA-256 of the model weights (stable across re-saves of the same weights)."""
    state = load_checkpoint(source) if not isinstance(source, dict) else source
    digest = hashlib.sha256()
    for key in sorted(state["model"]):
        tensor = state["model"][key].detach().cpu().contiguous()
        digest.update(key.encode())
        buffer = io.BytesIO()
        buffer.write(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
        digest.update(buffer.getvalue())
    return digest.hexdigest()[:16]
