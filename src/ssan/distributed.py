"""Process-group helpers for ``torchrun`` launches (DDP); every helper is harmless in a single process.

Joining the group is the entry point's job (:func:`init_distributed`, called by ``ssan train`` and
``ssan index``); library objects only read :func:`current`. The collectives with gradients
(:func:`gather_with_grad`, :func:`all_reduce_sum_with_grad`) are what makes the DDP objective the
single-process objective over the global batch; see ``docs/method.md`` ("Several processes").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, List, Optional

import torch
import torch.distributed as dist

from ssan.errors import SsanError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``enabled`` when it belongs to a process group (torchrun), even of one."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher setting RANK and WORLD_SIZE) started this process."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: Optional[str] = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (entry points only).

    NCCL when the processes use CUDA, gloo otherwise. Every torchrun launch takes the DDP path,
    a launch of one process (``WORLD_SIZE=1``) too (a group of one: the same code as several
    GPUs, and it says so); a plain ``python -m ssan`` run has no process group.
    """
    if not launched_by_torchrun():
        return DistInfo()
    if dist.is_initialized():
        return current()
    world = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    info = current()
    if world == 1:
        log.info("torchrun with WORLD_SIZE=1: the DDP path with one process (%s)", backend)
    log.debug("joined process group: rank %d of %d (%s)", info.rank, info.world_size, backend)
    return info


def current() -> DistInfo:
    """This process's place in the process group (a single-process DistInfo when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), enabled=True)


def is_active() -> bool:
    """True inside a process group (of any size): the collectives below then really run."""
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_active():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def communication_device(fallback: torch.device) -> torch.device:
    """Where collective buffers must live: the CUDA device under NCCL, else ``fallback``."""
    if is_active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback


def all_finite(value: torch.Tensor) -> bool:
    """True when ``value`` (a scalar on any device) is finite on every process: one host read."""
    flag = torch.isfinite(value.detach()).to(torch.float32).reshape(1)
    if is_active():
        flag = flag.to(communication_device(flag.device))
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def average(values: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the processes (itself in a single process); no gradient."""
    if not is_active():
        return values
    buffer = values.detach().to(communication_device(values.device), copy=True)
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return (buffer / dist.get_world_size()).to(values.device)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0; the backward sums every process's gradient of this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of every process's ``tensor`` (equal shapes), in rank order, differentiable.

    When every process computes the same loss L of the gathered rows, the backward gives each
    process ``W * dL/d(its rows)``, and DDP's average over the W processes then yields exactly
    the gradient of L: the single-process gradient over the global batch. Identity alone.
    """
    if not is_active():
        return tensor
    if not tensor.requires_grad:
        pieces = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(pieces, tensor.contiguous())
        return torch.cat(pieces, dim=0)
    return _GatherWithGrad.apply(tensor)


def compress_gradients(ddp: torch.nn.parallel.DistributedDataParallel, kind: str) -> None:
    """Send ``ddp``'s gradient buckets as ``kind`` (``none``, ``bf16``, ``fp16``): DDP's compression hooks.

    Each process divides its bucket by the world size, casts it, all-reduces it and casts the sum
    back: half the bytes of float32 on the wire (the identity classifiers make most of them), at
    the cast's rounding (bf16: 8 significant bits, fp16: 11, with fp16's smaller range).
    """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    hooks = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}
    if kind != "none":
        ddp.register_comm_hook(None, hooks[kind])


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``module``'s buffers (BatchNorm running statistics) from process ``src`` to the others.

    DDP sends them at the start of every training forward, but each process then updates its own
    copy with its own batch: before all processes evaluate shares of one split, they must agree.
    """
    if not is_active():
        return
    for buffer in module.buffers():
        comm = buffer.to(communication_device(buffer.device))
        dist.broadcast(comm, src=src)
        with torch.no_grad():
            buffer.copy_(comm)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """A small picklable ``value`` of process ``src``, on every process (itself in a single process)."""
    if not is_active():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def broadcast_tree(tree: Any, device: torch.device, src: int = 0) -> Any:
    """``tree`` (nested dicts/lists of tensors and plain values) of process ``src``, on every process.

    The structure travels as one pickled object with the tensors left out; each tensor then
    travels as a tensor broadcast (on the collective device), so a checkpoint of gigabytes is
    never pickled whole. Tensors arrive on the CPU with the memory layout they had on ``src``
    (a broadcast sends raw storage: a channels-last tensor travels contiguous and gets its
    strides back). For resuming on several nodes where only rank 0 can read ``last.pt``.
    """
    if not is_active():
        return tree
    tensors: List[torch.Tensor] = []
    skeleton = _strip_tensors(tree, tensors) if dist.get_rank() == src else None
    holder = [skeleton, [(tuple(t.shape), t.dtype, _strides(t)) for t in tensors] if dist.get_rank() == src else None]
    dist.broadcast_object_list(holder, src=src)
    skeleton, specs = holder
    comm = communication_device(device)
    received = []
    for i, (shape, dtype, strides) in enumerate(specs):
        if dist.get_rank() == src:
            buffer = tensors[i].to(comm).contiguous()
        else:
            buffer = torch.empty(shape, dtype=dtype, device=comm)
        dist.broadcast(buffer, src=src)
        received.append(_with_strides(buffer.cpu(), strides))
    return _restore_tensors(skeleton, received)


def _strides(tensor: torch.Tensor) -> Optional[tuple]:
    """``tensor``'s strides when it is dense without overlaps (channels-last, a transpose), else None."""
    expected = 1
    for size, stride in sorted((d for d in zip(tensor.shape, tensor.stride()) if d[0] > 1), key=lambda d: d[1]):
        if stride != expected:
            return None
        expected *= size
    return tensor.stride()


def _with_strides(tensor: torch.Tensor, strides: Optional[tuple]) -> torch.Tensor:
    if strides is None or tensor.stride() == strides:
        return tensor
    return torch.empty_strided(tensor.shape, strides, dtype=tensor.dtype).copy_(tensor)


class _Slot:
    def __init__(self, index: int) -> None:
        self.index = index


def _strip_tensors(tree: Any, tensors: list) -> Any:
    if torch.is_tensor(tree):
        tensors.append(tree)
        return _Slot(len(tensors) - 1)
    if isinstance(tree, dict):
        return {k: _strip_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_strip_tensors(v, tensors) for v in tree)
    return tree


def _restore_tensors(tree: Any, tensors: list) -> Any:
    if isinstance(tree, _Slot):
        return tensors[tree.index]
    if isinstance(tree, dict):
        return {k: _restore_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_restore_tensors(v, tensors) for v in tree)
    return tree


def run_on_main(work: Callable[[], Any], what: str) -> Any:
    """Run ``work()`` on rank 0 only; every process learns whether it failed.

    Returns ``work()``'s result on rank 0 (None elsewhere). When rank 0 fails, it re-raises and
    every other process raises :class:`SsanError` naming ``what`` instead of waiting at the next
    collective until the process-group timeout (30 minutes).
    """
    if not is_active():
        return work()
    result, failure, error = None, None, None
    if dist.get_rank() == 0:
        try:
            result = work()
        except BaseException as exc:  # re-raised below, after the others were told
            error, failure = exc, f"{type(exc).__name__}: {exc}"
    holder = [failure]
    dist.broadcast_object_list(holder, src=0)
    if error is not None:
        raise error
    if holder[0] is not None:
        raise SsanError(f"rank 0 failed during {what} ({holder[0]}); this process stops too")
    return result
