"""Counting what makes Python wait for a GPU in a block of code, on any device (the CPU too).

A GPU runs ahead of Python until Python needs something from it. :func:`count_syncs` watches
every operator call at the dispatcher (a ``TorchDispatchMode``), so it also sees the calls that
PyTorch's C++ code makes on Python's behalf, and records these:

- ``read``: ``aten._local_scalar_dense``, a value read back to the host: ``.item()``,
  ``float(t)``, ``bool(t)``, ``.tolist()``, and indexing with a 0-dim tensor (C++ reads the index);
- ``copy``: a blocking copy between devices (``.to(device)``, ``.cpu()`` without
  ``non_blocking=True``), which waits for the device's queue;
- ``host data``: a tensor made from Python values with an explicit device
  (``torch.as_tensor(0.2, device=x.device)``): on a GPU a blocking host-to-device copy, at every call;
- ``shape``: an operator whose output size depends on the values (``nonzero``, boolean-mask
  indexing, ``masked_select``, ``unique``): the host must learn the size.

On a CPU nothing waits, but the calls are the same, so a training step (or a loss term of your
own) is checked anywhere::

    from ssan.engine.profiling import count_syncs

    with count_syncs(host=[batch["lengths"], batch["weak_lengths"]]) as syncs:
        trainer.train_step(batch, epoch, step)
    print(len(syncs), syncs)  # ['read at src/ssan/distributed.py:104']: the finiteness check

Not counted: calls made inside ``torch.optim`` (Adam keeps its step counters on the host, on a
GPU too), and reads of ``host`` tensors (caption lengths are host data by design) and of every
tensor computed from them alone. ``.tolist()``, ``.numpy()``, ``torch.tensor`` and
``torch.as_tensor`` do not show at the dispatcher as reads or copies: they are counted at the
Python call. Copies are counted only between different devices, so on a CPU run the count holds
reads, host data and shapes only. On a GPU,
``torch.cuda.set_sync_debug_mode("warn")`` sees the real synchronisations
(``benchmarks/gpu_check.py`` reports both).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterable, Iterator, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

aten = torch.ops.aten
_OPTIM = str(Path(torch.optim.__file__).parent)
_TORCH = str(Path(torch.__file__).parent)
_SHAPE_OPS = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten._unique2.default,
    aten.unique_dim.default,
    aten.unique_consecutive.default,
}


@contextlib.contextmanager
def count_syncs(host: Iterable[torch.Tensor] = ()) -> Iterator[List[str]]:
    """A list that collects ``"KIND at FILE:LINE"`` for every counted call made while the block runs.

    Args:
        host: tensors that are host data by design (caption lengths): reads of them, and of
            tensors computed from them alone, are not counted.
    """
    mode = _SyncCounter(host)
    originals = {(owner, name): getattr(owner, name) for owner, name in _WRAPPED}
    for (owner, name), original in originals.items():
        setattr(owner, name, _wrap(mode, name, original))
    try:
        with mode:
            yield mode.syncs
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


# Calls that never reach the dispatcher as a read: caught at the Python function instead.
_WRAPPED = [(torch.Tensor, "tolist"), (torch.Tensor, "numpy"), (torch, "tensor"), (torch, "as_tensor")]


def _wrap(mode: _SyncCounter, name: str, original):
    def counted(data, *args, **kwargs):
        if name in ("tolist", "numpy"):
            kind = None if data in mode.host else "read"
        else:  # torch.tensor / torch.as_tensor of Python values with an explicit device
            kind = "host data" if kwargs.get("device") is not None and not torch.is_tensor(data) else None
        if kind is not None and not _inside(_OPTIM):
            mode.syncs.append(f"{kind} at {_caller()}")
        return original(data, *args, **kwargs)

    return counted


class _SyncCounter(TorchDispatchMode):
    def __init__(self, host: Iterable[torch.Tensor]) -> None:
        super().__init__()
        self.syncs: List[str] = []
        self.host = WeakTensorKeyDictionary()
        for tensor in host:
            self.host[tensor] = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        from_host = bool(inputs) and all(t in self.host for t in inputs)
        kind = _kind(func, args, kwargs, from_host)
        if kind is not None and not _inside(_OPTIM):
            self.syncs.append(f"{kind} at {_caller()}")
        if from_host:
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor):
                    self.host[tensor] = True
        return out


def _kind(func, args, kwargs, from_host: bool):
    """The kind of wait ``func`` would cause on a GPU, or None."""
    if func is aten._local_scalar_dense.default:
        return None if from_host else "read"
    if func is aten._to_copy.default:
        target = kwargs.get("device")
        moves = target is not None and torch.device(target) != args[0].device
        return "copy" if moves and not kwargs.get("non_blocking", False) else None
    if func is aten.copy_.default:
        blocking = not (args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
        return "copy" if args[0].device != args[1].device and blocking else None
    if func in _SHAPE_OPS or (func is aten.index.Tensor and _has_mask(args[1])):
        return None if from_host else "shape"
    return None


def _has_mask(indices) -> bool:
    return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in indices)


def _inside(folder: str) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.startswith(folder):
            return True
        frame = frame.f_back
    return False


def _caller() -> str:
    """``file:line`` of the innermost Python frame outside torch (where the code asked for it)."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith(_TORCH) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return "?"
    parts = Path(frame.f_code.co_filename).parts
    return f"{'/'.join(parts[-3:])}:{frame.f_lineno}"
