"""The GPU check's ``clip`` stage: SSAN on a CLIP ViT-B/16 trunk (kept apart from gpu_check.py).

ViT-B-16 SSAN-CLIP (the cuhk-pedes-clip preset) at 384x128, batch 64, in fp32 and bf16: steps/s,
images/s, loader wait, peak GPU memory and host syncs per step, timed as the ``train`` stage
times the ResNet model. The trunks are randomly initialised (model.pretrained=false): the stage
measures speed and memory, which the weights do not change; nothing is downloaded. The dry run
times the tiny synth-clip model on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

PRECISIONS = ("fp32", "bf16")


def clip_spec(spec: dict) -> tuple:
    """(preset, overrides) of the stage for the check's sizes ``spec``."""
    if spec["device"] == "cpu":
        return "synth-clip", ["data.batch_size=16", "data.num_workers=0", "train.cpu_threads=1"]
    return "cuhk-pedes-clip", ["model.pretrained=false", "data.num_workers=8", "data.batch_size=64"]


def stage_clip(data: Path, spec: dict, folder: Path, time_steps: Callable, count_step_syncs: Callable) -> dict:
    """The stage's report: one entry per precision, measured as gpu_check's train stage measures."""
    from ssan.config import load_config
    from ssan.engine.runtime import training_runtime
    from ssan.engine.trainer import Trainer

    preset, overrides = clip_spec(spec)
    report = {"preset": preset, "weights": "random (speed and memory only)"}
    device = torch.device(spec["device"])
    for precision in PRECISIONS:
        amp = [] if precision == "fp32" else ["train.amp=true", f"train.amp_dtype={precision}"]
        config = load_config(preset, overrides + amp + ["optim.epochs=1"])
        trainer = Trainer.from_config(config, data, folder / f"clip-{precision}", device=spec["device"])
        needed = 3 + spec["steps"] + spec["sync_steps"]
        trainer.sampler.set_epoch(0, 0, needed)
        batches = iter(trainer.loader())
        with training_runtime(config.train, device):
            report[precision] = time_steps(trainer, batches, spec["steps"], device)
            report[precision].update(count_step_syncs(trainer, batches, spec["sync_steps"], device))
        report[precision].update(input=f"{config.data.height}x{config.data.width}", batch=config.data.batch_size)
        del trainer, batches
    return report
