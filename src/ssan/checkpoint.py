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

Training writes two files: ``last.pt`` (everything above: what resuming needs) and ``best.pt``
(no training state: what ``test``, ``index``, ``search`` and ``export`` load), see
:func:`inference_state`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import torch

from ssan._files import atomic_write
from ssan.errors import CheckpointError
from ssan.models._state_dict import strip_prefixes

log = logging.getLogger(__name__)

FORMAT = "ssan-checkpoint"
VERSION = 1
TRAINING_KEYS = ("criterion", "optimizer", "scheduler", "scaler", "rng")
REQUIRED_KEYS = ("arch", "model", "vocab")

PathLike = Union[str, os.PathLike]


def save_checkpoint(path: PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, fsync, rename).

    A process killed at any moment leaves either the previous file or the new one, never a
    half-written file under ``path``.
    """
    payload = {"format": FORMAT, "version": VERSION, **state}
    return atomic_write(path, lambda handle: torch.save(payload, handle))


def _folder_given(path: Path) -> str:
    """The message for a folder given as a checkpoint: the checkpoints found in it (or its run's)."""
    inside = [p for folder in (path, path / "checkpoints") for p in (folder / "best.pt", folder / "last.pt")]
    found = [str(p) for p in inside if p.is_file()]
    if found:
        return f"checkpoint {path} is a folder, not a file: give one of the checkpoints in it, {' or '.join(found)}"
    return f"checkpoint {path} is a folder, not a file, and holds no best.pt or last.pt"


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict:
    """Load and validate a checkpoint; every failure is a :class:`CheckpointError` naming the file.

    The archive's CRC-32 checksums are verified first (``torch.load`` does not check them), so
    flipped bits in the weights are reported instead of loaded.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(_folder_given(path))
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    _verify_archive(path)
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} was refused: it needs to unpickle objects that are not plain data "
            f"(unsafe or not an ssan checkpoint): {_unpickling_reason(exc)}"
        ) from None
    except Exception as exc:  # a damaged archive makes torch raise almost any type
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {_first_line(exc)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an ssan checkpoint (no '{FORMAT}' format marker)")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {state.get('version')!r}; this ssan reads {VERSION}")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    _check_schema(state, path)
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _unpickling_reason(exc: BaseException) -> str:
    """The specific line of torch's refusal (e.g. the blocked global), not its generic advice."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if "nsupported" in line or "GLOBAL" in line]
    return specific[0] if specific else _first_line(exc)


def _verify_archive(path: Path) -> None:
    """Check every member's CRC-32 when ``path`` is a zip archive (what ``torch.save`` writes).

    ``torch.save`` stores members uncompressed, so a compressed member is refused: it bounds the
    work here by the file size (no zip bomb).
    """
    try:
        if not zipfile.is_zipfile(path):
            return  # not an archive: torch.load reports what it is
        with zipfile.ZipFile(path) as archive:
            packed = [i.filename for i in archive.infolist() if i.compress_type != zipfile.ZIP_STORED]
            if packed:
                raise CheckpointError(f"checkpoint {path} is not a torch.save file (compressed member {packed[0]})")
            bad = archive.testzip()
    except CheckpointError:
        raise
    except Exception as exc:  # BadZipFile, EOFError, OSError, struct.error, ...
        raise CheckpointError(f"checkpoint {path} is truncated or corrupted: {_first_line(exc)}") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} is corrupted: checksum mismatch in {bad}")


def _check_schema(state: dict, path: Path) -> None:
    """The types that the rest of ssan relies on: arch dict, model dict of tensors, vocab strings, a
    config that :class:`ssan.config.Config` accepts."""
    problems = []
    if not isinstance(state["arch"], dict) or not all(isinstance(k, str) for k in state["arch"]):
        problems.append("'arch' is not a dict of named arguments")
    model = state["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in model.items()):
        problems.append("'model' is not a dict of named tensors")
    if not isinstance(state["vocab"], list) or not all(isinstance(w, str) for w in state["vocab"]):
        problems.append("'vocab' is not a list of words")
    if state.get("config") is not None:
        from ssan.config import Config

        try:
            Config.from_dict(state["config"])
        except Exception as exc:  # ConfigError, or a type error on a malformed value
            problems.append(f"its 'config' is invalid ({_first_line(exc)})")
    if problems:
        raise CheckpointError(f"checkpoint {path} is malformed: {'; '.join(problems)}")


def inference_state(state: dict) -> dict:
    """The checkpoint without its training-only entries (optimizer, classifiers, RNG...)."""
    return {key: value for key, value in state.items() if key not in TRAINING_KEYS}


def model_from_checkpoint(state: dict, device: Union[str, torch.device] = "cpu", source: str = "checkpoint"):
    """Build the model described by ``state['arch']`` and load its weights strictly.

    The architecture is first checked against the weights' sizes, then built on the ``meta``
    device (no memory) and compared with the weights, so a hostile or mismatched ``arch`` is
    refused before anything is allocated.
    """
    from ssan.models.ssan import SSAN, normalise_arch

    arch = normalise_arch(state["arch"])
    arch["pretrained"] = False  # the checkpoint carries every weight
    weights = strip_prefixes(state["model"])
    oversized = _oversized_arguments(arch, weights)
    if oversized:
        raise CheckpointError(f"{source}: its architecture does not fit its weights ({oversized})")
    try:
        with torch.device("meta"):
            skeleton = SSAN(**arch)
    except Exception as exc:  # the arch is data from a file: any constructor failure is its fault
        raise CheckpointError(f"{source}: cannot build the model from its architecture {arch}: {exc}") from None
    mismatch = _shape_mismatch(skeleton.state_dict(), weights)
    if mismatch:
        raise CheckpointError(f"{source}: weights do not match the architecture: {mismatch}")
    model = SSAN(**arch)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise CheckpointError(f"{source}: weights do not match the architecture: {' '.join(lines[1:3])}") from None
    return model.to(device).eval()


def _oversized_arguments(arch: dict, weights: dict) -> str:
    """Integer arguments larger than every weight dimension in the file (each sizes some weight).

    Checked before building anything: a crafted ``num_parts=10**7`` would otherwise take minutes
    even on the ``meta`` device.
    """
    largest = max((max(t.shape) for t in weights.values() if t.dim()), default=0)
    return "; ".join(
        f"{key}={value} exceeds the largest weight dimension in the file ({largest})"
        for key, value in arch.items()
        if isinstance(value, int) and not isinstance(value, bool) and value > largest
    )


def _shape_mismatch(expected: dict, weights: dict, limit: int = 3) -> str:
    """Missing / unexpected keys and shape differences, described in a few words ('' if none)."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [
        f"{k} {tuple(weights[k].shape)} in the file vs {tuple(v.shape)} for the architecture"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    parts = []
    if missing:
        parts.append(f"missing keys {', '.join(missing[:limit])}{' ...' if len(missing) > limit else ''}")
    if unexpected:
        parts.append(f"unexpected keys {', '.join(unexpected[:limit])}{' ...' if len(unexpected) > limit else ''}")
    if shapes:
        parts.append(f"shape {'; '.join(shapes[:limit])}{' ...' if len(shapes) > limit else ''}")
    return "; ".join(parts)


def load_model(path: PathLike, device: Union[str, torch.device] = "cpu") -> Tuple[Any, Any, dict]:
    """Load a checkpoint for inference.

    Returns:
        ``(model, vocab, info)``: the model in eval mode on ``device`` (SSAN, or another family
        registered in :mod:`ssan.models.families`, e.g. an open_clip model), its vocabulary
        (:class:`ssan.data.vocab.Vocabulary`, or CLIP's tokenizer), and the checkpoint without training state.
    """
    from ssan.models.families import load_family_model

    state = load_checkpoint(path)
    model, vocab = load_family_model(state, device=device, source=f"checkpoint {path}")
    return model, vocab, inference_state(state)


def check_compatible(
    state: dict, *, vocab: Optional[list] = None, arch: Optional[dict] = None, source: str = ""
) -> None:
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
        from ssan.models.ssan import normalise_arch

        theirs = normalise_arch(state["arch"])
        differences = [
            f"{key}: {theirs.get(key)!r} vs {arch.get(key)!r}"
            for key in sorted(set(theirs) | set(arch))
            if key != "pretrained" and theirs.get(key) != arch.get(key)
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
