"""The trainer: the paper's recipe with checkpoints that resume exactly, DDP and evaluation.

Usage::

    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    result = Trainer(load_config("synth"), "data/prepared", "runs/synth").fit()

Run directory layout::

    config.yaml            the resolved configuration
    metrics.jsonl          one row per epoch (losses, learning rate, evaluation figures)
    checkpoints/last.pt    everything needed to resume (written atomically)
    checkpoints/best.pt    the best epoch on the selection split
    results.json           final test figures: last epoch and selected epoch, labelled
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ssan.config import Config, save_config
from ssan.engine import distributed
from ssan.engine.builders import build_criterion, build_model, training_dataset
from ssan.engine.checkpoint import check_compatible, load_checkpoint, save_checkpoint, strip_prefixes
from ssan.engine.optim import build_optimizer, build_scheduler
from ssan.engine.sampler import EpochSampler
from ssan.engine.state import rng_state, seed_everything, set_rng_state, step_seed
from ssan.errors import CheckpointError, SsanError

log = logging.getLogger(__name__)


class NonFiniteLoss(SsanError):
    """The loss became NaN or infinite; training stopped without saving."""


class TrainStep(nn.Module):
    """Model and criterion in one ``forward`` so that DDP sees every trained parameter."""

    def __init__(self, model: nn.Module, criterion: nn.Module):
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: dict, epoch: int) -> dict:
        images = self.model.encode_image(batch["image"])
        texts = self.model.encode_text(batch["tokens"], batch["lengths"])
        weak = self.model.encode_text(batch["weak_tokens"], batch["weak_lengths"])
        return self.criterion(images, texts, weak, batch["label"], epoch)


def pick_device(requested: Optional[str] = None, local_rank: int = 0) -> torch.device:
    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise SsanError(f"device {requested!r} was asked for but CUDA is not available")
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    """Move a batch to ``device``; caption lengths stay on the CPU (packed sequences need them there)."""
    return {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) and "length" not in key else value
        for key, value in batch.items()
    }


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 (the paper's augmentation)."""
    mask = torch.rand(images.shape[0], generator=generator) < 0.5
    if mask.any():
        images = images.clone()
        idx = mask.nonzero().flatten().to(images.device)
        images[idx] = images[idx].flip(-1)
    return images


class Trainer:
    """Trains SSAN on a prepared dataset.

    Args:
        config: resolved configuration (see :mod:`ssan.config`).
        data_dir: output folder of ``ssan prepare``.
        output_dir: run directory (created).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        resume: continue from ``output_dir/checkpoints/last.pt``.
        stop_after_steps: stop (as if killed) after this many optimisation steps of this
            process: used by tests of interrupted training.
    """

    def __init__(
        self,
        config: Config,
        data_dir: Union[str, os.PathLike],
        output_dir: Union[str, os.PathLike],
        *,
        device: Optional[str] = None,
        resume: bool = False,
        stop_after_steps: Optional[int] = None,
    ):
        from ssan.data import load_prepared

        self.config = config
        self.dist = distributed.init_distributed(device)
        self.device = pick_device(device, self.dist.local_rank)
        if self.device.type == "cpu" and config.train.cpu_threads > 0:
            torch.set_num_threads(config.train.cpu_threads)
        self.output_dir = Path(output_dir)
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.prepared = load_prepared(data_dir)
        self.resume = resume
        self.stop_after_steps = stop_after_steps
        self.steps_done = 0
        self._partial: Optional[dict] = None
        self._resumed_partial: Optional[dict] = None
        self.history: list = []
        self.best: Optional[dict] = None
        self.epoch = 0
        self.start_step = 0
        self.select_split = self._selection_split()
        self._build()

    # ------------------------------------------------------------------ setup
    def _selection_split(self) -> str:
        wanted = self.config.train.select_split
        splits = self.prepared.splits
        if wanted == "auto":
            return "val" if "val" in splits else "test"
        if wanted not in splits:
            raise SsanError(f"selection split {wanted!r} is not in the prepared data (has: {', '.join(splits)})")
        return wanted

    def _build(self) -> None:
        cfg = self.config
        seed_everything(cfg.train.seed)
        self.model = build_model(cfg.model, vocab_size=len(self.prepared.vocab)).to(self.device)
        self.criterion = build_criterion(cfg, self.prepared.num_classes, self.model).to(self.device)
        self.step_module: nn.Module = TrainStep(self.model, self.criterion)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids)
        self.optimizer = build_optimizer(
            self.model, [self.criterion], lr=cfg.optim.lr, backbone_lr=cfg.optim.backbone_lr,
            betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay,
        )
        self.scheduler = build_scheduler(self.optimizer, cfg.optim.milestones, cfg.optim.gamma)
        self.use_amp = bool(cfg.train.amp) and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.dataset = training_dataset(self.prepared, cfg.data, seed=cfg.train.seed)
        self.sampler = EpochSampler(
            len(self.dataset), cfg.data.batch_size, seed=cfg.train.seed,
            rank=self.dist.rank, world_size=self.dist.world_size,
        )
        if self.sampler.steps_per_epoch() == 0:
            raise SsanError(
                f"batch size {cfg.data.batch_size} is larger than the {self.sampler.per_rank} training pairs "
                f"per process; lower data.batch_size"
            )

    def _loader(self) -> DataLoader:
        from ssan.data import collate_batch

        workers = self.config.data.num_workers
        return DataLoader(
            self.dataset, batch_size=self.config.data.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=workers, collate_fn=collate_batch, pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # ------------------------------------------------------------- checkpoints
    def _state(self, step_in_epoch: int) -> dict:
        return {
            "arch": dict(self.model.arch),
            "model": self.model.state_dict(),
            "vocab": self.prepared.vocab.to_list(),
            "dataset": {
                "name": self.prepared.summary.get("dataset"),
                "num_classes": self.prepared.num_classes,
                "vocab_size": len(self.prepared.vocab),
            },
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "step_in_epoch": step_in_epoch,
            "history": self.history,
            "partial_epoch": self._partial if step_in_epoch else None,
            "best": self.best,
            "metrics": self.history[-1] if self.history else {},
            "criterion": self.criterion.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
        }

    def _save(self, name: str, step_in_epoch: int = 0) -> None:
        if self.dist.is_main:
            save_checkpoint(self.ckpt_dir / f"{name}.pt", self._state(step_in_epoch))

    def _restore(self) -> None:
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        check_compatible(state, vocab=self.prepared.vocab.to_list(), arch=self.model.arch,
                         source=f"{path} (--resume with data {self.prepared.directory})")
        self.model.load_state_dict(strip_prefixes(state["model"]))
        self.criterion.load_state_dict(state["criterion"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        self.epoch, self.start_step = int(state["epoch"]), int(state.get("step_in_epoch", 0))
        self.history, self.best = list(state.get("history", [])), state.get("best")
        self._resumed_partial = state.get("partial_epoch")
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch + 1, self.start_step)

    # ---------------------------------------------------------------- training
    def fit(self) -> dict:
        """Train to ``optim.epochs``, evaluating and checkpointing; returns the final results."""
        if self.dist.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.output_dir / "config.yaml")
        if self.resume:
            self._restore()
        self._writer = _ScalarWriter(self.output_dir) if self.dist.is_main else None
        epochs = self.config.optim.epochs
        try:
            while self.epoch < epochs:
                losses, seconds = self._train_epoch(self.epoch, self.start_step)
                self.start_step = 0
                self.epoch += 1
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this epoch trained with
                self.scheduler.step()
                row, improved = self._epoch_row(losses, seconds, lr)
                self.history.append(row)
                self._save("last")
                if improved:
                    self._save("best")
                self._write_history()
                distributed.barrier()
            return self._final_results()
        except _Stopped:
            log.info("stopped after %d steps (stop_after_steps)", self.steps_done)
            return {"stopped": True, "epoch": self.epoch}
        finally:
            if self._writer is not None:
                self._writer.close()

    def _train_epoch(self, epoch: int, start_step: int):
        cfg = self.config
        self.sampler.set_epoch(epoch, start_step)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self.step_module.train()
        total_steps = self.sampler.steps_per_epoch()
        if cfg.train.max_steps_per_epoch > 0:
            total_steps = min(total_steps, cfg.train.max_steps_per_epoch)
        partial = self._resumed_partial if start_step else None
        self._resumed_partial = None
        sums: dict = dict(partial["sums"]) if partial else {}
        count = int(partial["count"]) if partial else 0
        started = time.perf_counter()
        bar = tqdm(total=total_steps, initial=start_step, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}",
                   disable=not self.dist.is_main, leave=False, dynamic_ncols=True)
        step = start_step
        for batch in self._loader():
            if step >= total_steps:
                break
            terms = self._train_step(batch, epoch, step)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            count, step = count + 1, step + 1
            bar.update(1)
            if step % max(1, cfg.train.log_every) == 0 or step == total_steps:
                bar.set_postfix({k: f"{v / count:.3f}" for k, v in sums.items() if k in ("total", "cr_global", "id_global")})
            if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0 and step < total_steps:
                self._partial = {"sums": dict(sums), "count": count}
                self._save("last", step_in_epoch=step)
            self._maybe_stop()
        bar.close()
        seconds = time.perf_counter() - started
        return {key: value / max(count, 1) for key, value in sums.items()}, seconds

    def _train_step(self, batch: dict, epoch: int, step: int) -> dict:
        seed = step_seed(self.config.train.seed, epoch, step, self.dist.rank)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        batch = to_device(batch, self.device)
        if self.config.data.flip:
            batch["image"] = random_flip(batch["image"], generator)
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.use_amp):
            terms = self.step_module(batch, epoch)
        total = terms["total"]
        if not distributed.all_true(bool(torch.isfinite(total.detach()).item()), self.device):
            raise NonFiniteLoss(
                f"the loss became non-finite ({total.item()}) at epoch {epoch + 1}, step {step + 1}; "
                f"training stopped and the last good checkpoint {self.ckpt_dir / 'last.pt'} was left as it was"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {key: float(value.detach()) for key, value in terms.items()}

    def _maybe_stop(self) -> None:
        self.steps_done += 1
        if self.stop_after_steps is not None and self.steps_done >= self.stop_after_steps:
            raise _Stopped()

    # -------------------------------------------------------------- evaluation
    def _epoch_row(self, losses: dict, seconds: float, lr: float) -> tuple:
        cfg = self.config
        pairs = self.sampler.steps_per_epoch() * cfg.data.batch_size * self.dist.world_size
        row = {
            "epoch": self.epoch,
            "lr": lr,
            "time_s": round(seconds, 3),
            "pairs_per_s": round(pairs / seconds, 2) if seconds > 0 else None,
        }
        row.update({f"loss/{key}": value for key, value in losses.items()})
        improved = False
        due = self.epoch % max(1, cfg.train.eval_every) == 0 or self.epoch == cfg.optim.epochs
        if due:
            results = self._evaluate(self.select_split)
            if results is not None:
                row.update(_flatten_metrics(self.select_split, results))
                improved = self._update_best(results)
        if self._writer is not None:
            self._writer.write(row)
        return row, improved

    def _evaluate(self, split: str, model: Optional[nn.Module] = None) -> Optional[dict]:
        """Evaluate on rank 0 only (other ranks wait at the next barrier)."""
        if not self.dist.is_main:
            return None
        from ssan.evaluation import evaluate

        cfg = self.config.data
        model = model if model is not None else self.model
        results = evaluate(
            model, self.prepared, split=split, device=self.device, batch_size=cfg.eval_batch_size,
            num_workers=cfg.num_workers, height=cfg.height, width=cfg.width,
        )
        model.train()
        return results

    def _update_best(self, results: dict) -> bool:
        cfg = self.config.train
        value = results["t2i"][_term(results, cfg.select_term)][cfg.select_metric]
        if self.best is not None and value <= self.best["value"]:
            return False
        self.best = {"epoch": self.epoch, "split": self.select_split, "term": cfg.select_term,
                     "metric": cfg.select_metric, "value": value}
        return True

    def _write_history(self) -> None:
        if not self.dist.is_main:
            return
        path = self.output_dir / "metrics.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in self.history), encoding="utf-8")
        os.replace(tmp, path)

    def _final_results(self) -> dict:
        """Test figures of the last epoch and of the selected epoch, written to ``results.json``."""
        results: dict = {"selection": self.best, "epochs": self.epoch}
        if self.dist.is_main:
            results["test_last"] = self._evaluate("test")
            if self.best is not None and self.select_split != "test":
                from ssan.engine.checkpoint import model_from_checkpoint

                best_state = load_checkpoint(self.ckpt_dir / "best.pt")
                best_model = model_from_checkpoint(best_state, device=self.device)
                results["test_selected"] = self._evaluate("test", best_model)
                results["test_selected_label"] = f"epoch {self.best['epoch']} selected on {self.select_split}"
            elif self.best is not None:
                results["test_selected_label"] = (
                    f"epoch {self.best['epoch']} selected on the test split (the field's practice; optimistic)"
                )
            tmp = self.output_dir / "results.json.tmp"
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.output_dir / "results.json")
        distributed.barrier()
        return results


class _Stopped(Exception):
    """Raised by ``stop_after_steps`` to simulate an interrupted run."""


def _term(results: dict, term: str) -> str:
    return term if term in results["t2i"] else "global"


def _flatten_metrics(split: str, results: dict) -> dict:
    return {
        f"{split}/{term}/{name}": value
        for term, metrics in results["t2i"].items()
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
    }


class _ScalarWriter:
    """TensorBoard scalars when tensorboard is installed; otherwise nothing."""

    def __init__(self, output_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._tb = None
        else:
            self._tb = SummaryWriter(str(output_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        if self._tb is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self._tb.add_scalar(key, value, row["epoch"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
