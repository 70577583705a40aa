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


def stage_clip(data: Path, spec: dict, folder: Path, time_steps: Callable) -> dict:
    """The stage's report: one entry per precision (see :func:`gpu_check.time_steps`)."""
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    preset, overrides = clip_spec(spec)
    report = {"preset": preset, "weights": "random (speed and memory only)"}
    for precision in PRECISIONS:
        amp = [] if precision == "fp32" else ["train.amp=true", f"train.amp_dtype={precision}"]
        config = load_config(preset, overrides + amp + ["optim.epochs=1"])
        trainer = Trainer.from_config(config, data, folder / f"clip-{precision}", device=spec["device"])
        report[precision] = time_steps(trainer, spec["steps"], torch.device(spec["device"]))
        report[precision]["input"] = f"{config.data.height}x{config.data.width}"
        report[precision]["batch"] = config.data.batch_size
        del trainer
    return report
