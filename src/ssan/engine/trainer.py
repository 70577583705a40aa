"""The trainer: the paper's recipe, resumable checkpoints, DDP over the global batch, evaluation, hooks.

``Trainer.from_config(load_config("synth"), "data/prepared", "runs/synth").fit()``, or
``Trainer(config, prepared, model, criterion, optimizer, scheduler, dataset, output_dir,
hooks=[...])`` with components of your own (see :mod:`ssan.engine.builders`). Under ``torchrun``,
join the process group first (``ssan.distributed.init_distributed()``, as ``ssan train`` does).

Run directory layout::

    config.yaml            the resolved configuration
    metrics.jsonl          one row per epoch (losses, learning rate, evaluation figures)
    checkpoints/last.pt    everything needed to resume (written atomically)
    checkpoints/best.pt    the best epoch on the selection split, without training state
    results.json           final test figures: last epoch, selected epoch, reference protocol
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Iterable, Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssan import distributed
from ssan.config import Config, save_config
from ssan.data.augment import augment_images, draw_augmentations
from ssan.devices import resolve_device
from ssan.engine import results as reports
from ssan.engine.builders import ComponentBuilders
from ssan.engine.checkpointer import CheckpointWriter
from ssan.engine.hooks import Hook, HookList
from ssan.engine.reports import RunReports
from ssan.engine.runtime import training_runtime
from ssan.engine.sampler import GlobalBatchSampler
from ssan.engine.state import RunningLosses, restore_training_state, step_seed, training_state
from ssan.engine.step import Precision, TrainStep, device_batch, device_generator, flip_mask
from ssan.engine.sync_bn import convert_sync_batchnorm
from ssan.errors import ConfigError, SsanError
from ssan.losses.terms import StepInputs

log = logging.getLogger(__name__)


class NonFiniteLoss(SsanError):
    """The loss became NaN or infinite; training stopped without applying that step."""


class Trainer(ComponentBuilders, RunReports):
    """Trains an SSAN model on a prepared dataset.

    Args:
        config: the run's configuration (``data``, ``optim`` and ``train`` sections are read here).
        prepared: the :class:`ssan.data.PreparedDataset` (evaluation splits, vocabulary).
        model, criterion, optimizer, scheduler: the components (see ``from_config`` for the defaults).
        dataset: the training dataset (``ssan.data.TrainDataset``: samples addressed by key).
        output_dir: run directory (created).
        device: a ``torch.device`` (see :func:`ssan.devices.resolve_device`).
        resume: continue from ``output_dir/checkpoints/last.pt``.
        overwrite: replace a run already in ``output_dir`` (without it or ``resume``, one is refused).
        hooks: :class:`ssan.engine.hooks.Hook` instances.
    """

    def __init__(
        self,
        config: Config,
        prepared,
        model: nn.Module,
        criterion: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        dataset,
        output_dir: Union[str, os.PathLike],
        *,
        device: Optional[torch.device] = None,
        resume: bool = False,
        overwrite: bool = False,
        hooks: Iterable[Hook] = (),
    ) -> None:
        self._replaced = reports.check_run_folder(Path(output_dir), resume, overwrite)  # before any process writes
        self.config, self.prepared, self.dataset = config, prepared, dataset
        self.dist = distributed.current()
        self.device = torch.device(device) if device is not None else resolve_device(None)
        self.output_dir, self.resume = Path(output_dir), resume
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.hooks = HookList(hooks)
        self.precision = Precision.resolve(config.train.amp, config.train.amp_dtype, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.uses_scaler)
        self.model, self.criterion = model.to(self.device), criterion.to(self.device)
        if config.train.sync_bn and self.dist.enabled:
            native = distributed.communication_device(self.device).type == "cuda"  # NCCL
            self.model = convert_sync_batchnorm(self.model, native=native)
        if config.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.sampler = GlobalBatchSampler(
            len(dataset),
            config.data.batch_size,
            seed=config.train.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        self._check_batch()
        self.step_module: nn.Module = TrainStep(self.model, self.criterion)
        if self.dist.enabled:  # no device_ids: the batch is on the device already, and DDP would move the
            # CPU caption lengths to the GPU (and the text encoder back): 4 blocking copies per step
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module)
            distributed.compress_gradients(self.step_module, config.train.grad_compression)
        self.writer = CheckpointWriter(background=True)
        self.history: list = []
        self.best: Optional[dict] = None
        self.epoch = self.start_step = 0
        self._partial: Optional[dict] = None
        self._loader: Optional[DataLoader] = None
        self._evaluators: dict = {}
        self._last_test: Optional[tuple] = None  # (epoch, results) of the latest test evaluation
        self.select_split = self._selection_split()

    # ------------------------------------------------------------------ setup
    def _selection_split(self) -> str:
        wanted, splits = self.config.train.select_split, self.prepared.splits
        if wanted == "auto":
            return "val" if "val" in splits else "test"
        if wanted not in splits:
            raise SsanError(f"selection split {wanted!r} is not in the prepared data (has: {', '.join(splits)})")
        return wanted

    def _check_batch(self) -> None:
        if self.sampler.steps_per_epoch() == 0:
            raise SsanError(
                f"batch size {self.config.data.batch_size} is larger than the {len(self.dataset)} "
                "training pairs; lower data.batch_size"
            )
        model = self.config.model
        if (
            self.sampler.local_batch == 1
            and model.parts
            and model.relation_norm == "per_part"
            and not (self.config.train.sync_bn and self.dist.enabled)
        ):
            raise ConfigError(
                "a batch of 1 pair per process cannot train the relation module's per-part "
                "BatchNorm; raise data.batch_size, or set train.sync_bn=true under DDP, or "
                "model.relation_norm=shared (not the reference's module)"
            )

    def loader(self) -> DataLoader:
        """The training loader, built once; its worker processes (``data.num_workers``) live across epochs."""
        if self._loader is None:
            from ssan.data import collate_batch

            workers = self.config.data.num_workers
            self._loader = DataLoader(
                self.dataset,
                batch_size=self.sampler.local_batch,
                sampler=self.sampler,
                num_workers=workers,
                collate_fn=collate_batch,
                pin_memory=self.device.type == "cuda",
                persistent_workers=workers > 0,
            )
        return self._loader

    # ---------------------------------------------------------------- training
    def fit(self) -> dict:
        """Train to ``optim.epochs``, evaluating and checkpointing; returns the final results."""
        with training_runtime(self.config.train, self.device):
            try:
                return self._fit()
            finally:
                self.writer.wait()

    def _fit(self) -> dict:
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            for name in self._replaced:  # an overwritten run's files, so none outlives it
                (self.output_dir / name).unlink(missing_ok=True)
            save_config(self.config, self.output_dir / "config.yaml")
        if self.resume:
            restore_training_state(self, self.ckpt_dir / "last.pt")
        self.hooks.before_train(self)
        while self.epoch < self.config.optim.epochs:
            self.hooks.before_epoch(self, self.epoch)
            losses, seconds, steps = self._train_epoch(self.epoch, self.start_step)
            self.start_step, self.epoch = 0, self.epoch + 1
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
            self.scheduler.step()
            row, improved = self._epoch_row(losses, seconds, steps, lr)
            self.history.append(row)
            self._save(improved)
            distributed.run_on_main(
                lambda: reports.write_history(self.output_dir / "metrics.jsonl", self.history), "writing metrics.jsonl"
            )
            self.hooks.after_epoch(self, self.epoch - 1, row)
        results = self._final_results()
        self.hooks.after_train(self, results)
        return results

    def _steps(self) -> int:
        total, cap = self.sampler.steps_per_epoch(), self.config.train.max_steps_per_epoch
        return min(total, cap) if cap > 0 else total

    def _train_epoch(self, epoch: int, start_step: int) -> tuple:
        train = self.config.train
        total = self._steps()
        self.sampler.set_epoch(epoch, start_step, total)
        self.step_module.train()
        running = RunningLosses(self.device, self._partial if start_step else None)
        self._partial = None
        started = time.perf_counter()
        bar = tqdm(
            total=total,
            initial=start_step,
            desc=f"epoch {epoch + 1}/{self.config.optim.epochs}",
            disable=not self.dist.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        step = start_step
        for batch in self.loader():
            self.hooks.before_step(self, epoch, step)
            running.add(self.train_step(batch, epoch, step))
            step += 1
            bar.update(1)
            means = running.means() if step % max(1, train.log_every) == 0 or step == total else None
            if means is not None:
                bar.set_postfix({k: f"{means[k]:.3f}" for k in ("total", "cr_global", "id_global") if k in means})
            if train.checkpoint_every and step % train.checkpoint_every == 0 and step < total:
                self._partial = running.state()
                self._save(False, step_in_epoch=step)
            self.hooks.after_step(self, epoch, step - 1, means)
        bar.close()
        return running.means(), time.perf_counter() - started, step - start_step

    def train_step(self, batch: dict, epoch: int, step: int) -> dict:
        """One optimisation step; returns the loss terms as detached device tensors (no host read)."""
        train, data = self.config.train, self.config.data
        torch.manual_seed(step_seed(train.seed, epoch, step, self.dist.rank))  # dropout: this process's own
        shared = step_seed(train.seed, epoch, step)  # flips and mined negatives: those of the global batch
        flip, generator = None, torch.Generator().manual_seed(shared)
        rows = slice(self.dist.rank * self.sampler.local_batch, (self.dist.rank + 1) * self.sampler.local_batch)
        if data.flip:
            flip = flip_mask(data.batch_size, generator)[rows]
        batch = device_batch(batch, self.device, flip, train.channels_last)
        if data.pad_crop or data.erase_prob:  # the CLIP-era augmentations (ssan.data.augment)
            batch["image"] = augment_images(
                batch["image"], data, draw_augmentations(data, data.batch_size, generator, rows)
            )
        gather = distributed.gather_with_grad if self.dist.enabled else StepInputs().gather
        inputs = StepInputs(epoch, device_generator(self.device, shared), gather)
        with self.precision.autocast(self.device):
            terms = self.step_module(batch, inputs)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["total"]).backward()
        if not distributed.all_finite(terms["total"]):
            raise NonFiniteLoss(
                f"the loss became non-finite ({terms['total'].item()}) at epoch {epoch + 1}, step {step + 1}; "
                f"training stopped and the last good checkpoint {self.ckpt_dir / 'last.pt'} was left as it was"
            )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {key: value.detach() for key, value in terms.items()}

    def _save(self, improved: bool, step_in_epoch: int = 0) -> None:
        """``last.pt`` (and ``best.pt`` when ``improved``), written in the background by process 0;
        a failed write (this one's copy, or the previous background write) stops every process."""

        def save() -> None:
            files = [(self.ckpt_dir / "last.pt", training_state(self, step_in_epoch))]
            if improved:
                files.append((self.ckpt_dir / "best.pt", training_state(self, 0, inference_only=True)))
            self.writer.save(files)

        distributed.run_on_main(save, "saving a checkpoint")
