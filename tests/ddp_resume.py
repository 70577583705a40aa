"""Resume a run in every process and compare what each one holds with the file (not a test file).

    torchrun --nproc_per_node 2 tests/ddp_resume.py PREPARED RUN OUT [section.key=value ...]

Each process builds the trainer of RUN with ``--resume``'s state (rank 0 reads ``last.pt`` and
sends it) and writes ``OUT/rank<R>.json``: the names of the model weights and optimizer state
entries that differ from ``RUN/checkpoints/last.pt`` (values or memory layout).
"""

import json
import sys

import torch

from ssan import distributed
from ssan.checkpoint import load_checkpoint
from ssan.config import load_config
from ssan.engine.state import restore_training_state
from ssan.engine.trainer import Trainer


def differences(held, stored, prefix: str) -> list:
    """Names of the tensors of ``held`` whose values or strides differ from ``stored``'s."""
    if torch.is_tensor(held):
        same = torch.equal(held, stored) and held.stride() == stored.stride()
        return [] if same else [prefix]
    if isinstance(held, dict):
        return [name for key in held for name in differences(held[key], stored[key], f"{prefix}.{key}")]
    return []


def main() -> None:
    data, run, out, *overrides = sys.argv[1:]
    info = distributed.init_distributed("cpu")
    trainer = Trainer.from_config(load_config("synth", overrides), data, run, device="cpu", resume=True)
    path = trainer.ckpt_dir / "last.pt"
    restore_training_state(trainer, path)
    stored = load_checkpoint(path)
    report = {
        "model": differences(trainer.model.state_dict(), stored["model"], "model"),
        "optimizer": differences(trainer.optimizer.state_dict()["state"], stored["optimizer"]["state"], "state"),
        "channels_last": sum(v.dim() == 4 and not v.is_contiguous() for v in stored["model"].values()),
    }
    with open(f"{out}/rank{info.rank}.json", "w", encoding="utf-8") as file:
        json.dump(report, file)
    distributed.cleanup()


if __name__ == "__main__":
    main()
