"""Choosing the device: one rule for every command and library entry point."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch

from ssan.errors import SsanError

Device = Optional[Union[str, torch.device]]


def loader_workers() -> int:
    """Default image-loading processes of the encoding commands: the cores but one, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def resolve_device(requested: Device = None, local_rank: Optional[int] = None) -> torch.device:
    """``requested``, or CUDA when available, else the CPU.

    Args:
        requested: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device``, or None.
        local_rank: under torchrun, this process's local rank: ``cuda`` means ``cuda:LOCAL_RANK``,
            and an explicit other index is refused (every process would land on the same GPU).

    Raises:
        SsanError: CUDA was asked for but is not available, or an index conflicts with torchrun.
    """
    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(requested)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise SsanError(f"device {str(requested)!r} was asked for but CUDA is not available")
    if local_rank is None:
        return device
    if device.index is not None and device.index != local_rank:
        raise SsanError(
            f"--device {requested} under torchrun: each process uses the GPU of its local rank "
            f"(cuda:{local_rank} here); pass --device cuda and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local_rank)
