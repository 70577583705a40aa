"""Counting the host reads of a block of code: what makes Python wait for a GPU.

Reading a value (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, ``.numpy()``) or copying
a result to the host (``.cpu()``) stalls the Python side until the device has caught up. On a
CPU those calls cost nothing, but they are the same calls, so a training step (or a loss term
of your own) can be checked for them anywhere::

    from ssan.engine.profiling import count_host_reads

    with count_host_reads() as reads:
        trainer.train_step(batch, epoch, step)
    print(len(reads), reads)  # ['item']: the finiteness check

Only calls on floating-point and boolean tensors are counted (integer CPU bookkeeping such as
caption lengths is not device data), and none made inside ``torch.optim`` (Adam keeps its step
counters on the host, on a GPU too). On a GPU, ``torch.cuda.set_sync_debug_mode("warn")`` sees
the real synchronisations (``benchmarks/gpu_check.py`` uses it).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Iterator, List

import torch

COUNTED = ("item", "cpu", "tolist", "numpy", "__float__", "__bool__")
_OPTIM = str(Path(torch.optim.__file__).parent)


@contextlib.contextmanager
def count_host_reads() -> Iterator[List[str]]:
    """A list that collects the name of every counted call made while the block runs."""
    reads: List[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in COUNTED}

    def wrap(name, original):
        def counted(self, *args, **kwargs):
            if (self.dtype.is_floating_point or self.dtype == torch.bool) and _OPTIM not in sys._getframe(
                1
            ).f_code.co_filename:
                reads.append(name)
            return original(self, *args, **kwargs)

        return counted

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
