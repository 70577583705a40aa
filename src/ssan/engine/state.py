"""Training state: RNG states, the step seed, running loss sums, and the checkpoint content."""

from __future__ import annotations

import logging
import random
from typing import Dict, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """The seed of one training step: a pure function of where the step is.

    Re-seeding every step makes a run resumed mid-epoch draw exactly the random
    numbers (dropout, flips, mined negatives) of an uninterrupted one. ``rank`` 0 gives the
    seed every process shares (the global batch's flips and negatives); a process's own
    draws (dropout) use its rank.
    """
    return (seed * 1_000_003 + epoch * 100_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def rng_state() -> dict:
    """Every RNG state as plain data (tensors, ints, lists): safe for ``weights_only`` loading."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


class RunningLosses:
    """Sums of the loss terms over an epoch's steps, on the device: read only when asked.

    ``means()`` is one host read (and, under DDP, one all-reduce: the per-process means of the
    identity terms become the global batch's; the ranking terms are already global).

    Args:
        device: where the sums live.
        partial: ``state()`` of a partly run epoch (resume), or None.
    """

    def __init__(self, device: torch.device, partial: Optional[dict] = None) -> None:
        self.device = device
        self.names: list = list(partial["names"]) if partial else []
        self.sums: Optional[torch.Tensor] = partial["sums"].to(device) if partial else None
        self.count = int(partial["count"]) if partial else 0

    def add(self, terms: Dict[str, torch.Tensor]) -> None:
        if not self.names:
            self.names = list(terms)
        values = torch.stack([terms[name].detach().to(torch.float64) for name in self.names])
        self.sums = values if self.sums is None else self.sums + values
        self.count += 1

    def means(self) -> dict:
        if self.sums is None:
            return {}
        from ssan import distributed

        values = distributed.average(self.sums / max(self.count, 1)).tolist()
        return dict(zip(self.names, values))

    def state(self) -> dict:
        return {
            "names": list(self.names),
            "sums": self.sums.detach().cpu() if self.sums is not None else None,
            "count": self.count,
        }


def training_state(trainer, step_in_epoch: int = 0, inference_only: bool = False) -> dict:
    """The checkpoint content of ``trainer`` (a :class:`ssan.engine.trainer.Trainer`), plain data.

    ``inference_only`` leaves out what only resuming needs (the identity classifiers, the
    optimizer and scheduler states, RNG states): ``best.pt``, the file inference reads.
    """
    prepared = trainer.prepared
    state = {
        "arch": dict(trainer.model.arch),
        "model": trainer.model.state_dict(),
        "vocab": prepared.vocab.to_list(),
        "dataset": {
            "name": prepared.summary.get("dataset"),
            "num_classes": prepared.num_classes,
            "vocab_size": len(prepared.vocab),
        },
        "config": trainer.config.to_dict(),
        "epoch": trainer.epoch,
        "history": trainer.history,
        "best": trainer.best,
        "metrics": trainer.history[-1] if trainer.history else {},
        "precision": trainer.precision.name,
    }
    if inference_only:
        return state
    state.update(
        {
            "step_in_epoch": step_in_epoch,
            "partial_epoch": trainer._partial if step_in_epoch else None,
            "criterion": trainer.criterion.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "rng": rng_state(),
        }
    )
    return state


def restore_training_state(trainer, path) -> None:
    """Load ``path`` (``last.pt``) into ``trainer``: process 0 reads it and sends it to the others.

    A run can be resumed with another mixed-precision setting: the weights and the optimizer
    state carry over, and the GradScaler's state only from an fp16 run into an fp16 run.
    """
    from ssan import distributed
    from ssan.checkpoint import check_compatible, load_checkpoint
    from ssan.errors import CheckpointError
    from ssan.losses.criterion import upgrade_state_dict
    from ssan.models._state_dict import strip_prefixes

    def read() -> dict:
        if not path.exists():
            raise CheckpointError(f"--resume: no checkpoint at {path}")
        return load_checkpoint(path)

    state = distributed.broadcast_tree(distributed.run_on_main(read, f"reading {path}"), trainer.device)
    check_compatible(
        state,
        vocab=trainer.prepared.vocab.to_list(),
        arch=trainer.model.arch,
        source=f"{path} (--resume with data {trainer.prepared.directory})",
    )
    trainer.model.load_state_dict(strip_prefixes(state["model"]))
    trainer.criterion.load_state_dict(upgrade_state_dict(state["criterion"]))
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    previous = state.get("precision", "fp32")
    if previous != trainer.precision.name:
        log.info("resuming a %s run with %s (train.amp / train.amp_dtype changed)", previous, trainer.precision.name)
    if trainer.precision.uses_scaler and previous == "fp16" and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    trainer.epoch, trainer.start_step = int(state["epoch"]), int(state.get("step_in_epoch", 0))
    trainer.history, trainer.best = list(state.get("history", [])), state.get("best")
    trainer._partial = state.get("partial_epoch")
    log.info("resumed from %s at epoch %d, step %d", path, trainer.epoch + 1, trainer.start_step)


def best_model(trainer):
    """The selected epoch's model, read by process 0 from ``best.pt`` and sent to the others."""
    from ssan import distributed
    from ssan.checkpoint import load_checkpoint, model_from_checkpoint

    path = trainer.ckpt_dir / "best.pt"
    state = distributed.broadcast_tree(
        distributed.run_on_main(lambda: load_checkpoint(path), "reading best.pt"), trainer.device
    )
    return model_from_checkpoint(state, device=trainer.device, source=str(path))
