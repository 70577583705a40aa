"""The training sampler: global batches of a seeded shuffle, split across processes, resumable.

The order of an epoch is a pure function of ``(seed, epoch)``: the permutation is cut into
global batches of ``batch_size`` pairs (the last incomplete one dropped, as the paper's
``drop_last``), and under DDP process ``r`` of ``W`` takes the ``r``-th contiguous slice of each
global batch. Gathering the W slices in rank order therefore gives back exactly the batch a
single process sees, in the same order: the objective mined over the gathered batch is the
single-process one. A run resumed at step ``s`` skips the first ``s`` global batches.

The sampler yields sample *keys* (``epoch * num_samples + index``, see
:meth:`ssan.data.TrainDataset.key`), so the epoch reaches persistent worker processes with
every sample.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

from ssan.errors import ConfigError


class GlobalBatchSampler(Sampler):
    """This process's share of every global batch of an epoch, as sample keys.

    Args:
        num_samples: dataset length (training pairs).
        batch_size: the global batch (every process together).
        seed: base seed; the permutation of epoch ``e`` is seeded with ``seed + e``.
        rank, world_size: this process's place; ``batch_size`` must divide by ``world_size``.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if batch_size % world_size:
            raise ConfigError(
                f"data.batch_size={batch_size} (the global batch) does not divide among "
                f"{world_size} processes; use a multiple of {world_size}"
            )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.local_batch = batch_size // world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self.stop_step = self.steps_per_epoch()

    def set_epoch(self, epoch: int, start_step: int = 0, stop_step: int = 0) -> None:
        """Select the epoch's permutation, skip its first ``start_step`` global batches and end
        before ``stop_step`` (0: after the last complete batch)."""
        self.epoch = epoch
        self.start_step = start_step
        self.stop_step = min(stop_step, self.steps_per_epoch()) if stop_step > 0 else self.steps_per_epoch()

    def steps_per_epoch(self) -> int:
        """Complete global batches per epoch."""
        return self.num_samples // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of ``epoch`` (pair indices)."""
        return torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        offset = self.epoch * self.num_samples
        for step in range(self.start_step, self.stop_step):
            start = step * self.batch_size + self.rank * self.local_batch
            for index in order[start : start + self.local_batch].tolist():
                yield offset + index

    def __len__(self) -> int:
        return max(0, self.stop_step - self.start_step) * self.local_batch
