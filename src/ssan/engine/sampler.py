"""A resumable, shardable shuffle sampler.

The order of an epoch is a pure function of ``(seed, epoch)``, so a run resumed in the
middle of an epoch sees exactly the batches it would have seen. Under DDP each rank
takes every ``world_size``-th index of the padded permutation, as
:class:`torch.utils.data.DistributedSampler` does.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Shuffled indices of ``num_samples`` items for one rank, resumable at a batch offset.

    Args:
        num_samples: dataset length.
        batch_size: per-rank batch size (used to turn a step offset into an index offset).
        seed: base seed; the permutation of epoch ``e`` is seeded with ``seed + e``.
        rank, world_size: this process's shard.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_step = 0
        self.per_rank = math.ceil(num_samples / world_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start_step`` batches."""
        self.epoch = epoch
        self.start_step = start_step

    def _indices(self) -> list:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        padded = order + order[: self.per_rank * self.world_size - len(order)]
        return padded[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_step * self.batch_size :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start_step * self.batch_size)

    def steps_per_epoch(self, drop_last: bool = True) -> int:
        full = self.per_rank // self.batch_size
        return full if drop_last else math.ceil(self.per_rank / self.batch_size)
