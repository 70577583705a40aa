"""One optimisation step's pieces: precision, the model + criterion module, the batch on the device.

Host reads: a step reads one value back from the device (whether the loss is finite, before the
optimiser steps), plus the GradScaler's own check with fp16. Everything else stays queued on the
device: inputs arrive with non-blocking copies, the flip and the mined negatives use device-side
masks and generators, and the loss values are summed on the device and read every
``train.log_every`` steps.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ssan.data.transforms import normalize_images
from ssan.errors import ConfigError
from ssan.losses.terms import StepInputs

log = logging.getLogger(__name__)

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """Autocast settings of training: off, bf16, or fp16 with a gradient scaler."""

    enabled: bool = False
    dtype: torch.dtype = torch.float32

    @property
    def name(self) -> str:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, "fp32") if self.enabled else "fp32"

    @property
    def uses_scaler(self) -> bool:
        """fp16 needs loss scaling (its gradients underflow); bf16 has fp32's range."""
        return self.enabled and self.dtype == torch.float16

    @classmethod
    def resolve(cls, amp: bool, amp_dtype: str, device: torch.device) -> Precision:
        """``train.amp`` / ``train.amp_dtype`` on ``device`` (``auto``: bf16 where supported, else fp16)."""
        if not amp:
            return cls()
        if amp_dtype == "auto":
            # native bf16 only: V100 and T4 emulate it (slowly), where fp16 with the scaler is the better choice
            supported = device.type != "cuda" or torch.cuda.is_bf16_supported(including_emulation=False)
            amp_dtype = "bf16" if supported else "fp16"
        if amp_dtype not in _DTYPES:
            raise ConfigError(f"train.amp_dtype: unknown value {amp_dtype!r}; valid: auto, {', '.join(_DTYPES)}")
        return cls(True, _DTYPES[amp_dtype])

    def autocast(self, device: torch.device):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)


class TrainStep(nn.Module):
    """Model and criterion in one ``forward``, so that DDP sees every trained parameter.

    ``forward(batch, step)`` is ``criterion(model(batch), batch, step)``: the model's own
    ``forward`` encodes images, captions and weak captions.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion

    def forward(self, batch: dict, step: StepInputs) -> dict:
        return self.criterion(self.model(batch), batch, step)


def device_batch(batch: dict, device: torch.device, flip: torch.Tensor = None, channels_last: bool = False) -> dict:
    """The training batch on ``device``: non-blocking copies, images normalised there and flipped.

    Args:
        batch: collated training batch (``image`` uint8 or float, B x 3 x H x W); caption
            lengths stay on the CPU (the text encoder slices the tokens with them).
        flip: optional B bool (CPU) mask of the images to mirror horizontally.
        channels_last: lay the images out channels-last (faster convolutions on CUDA).
    """
    out = {
        key: value.to(device, non_blocking=True) if torch.is_tensor(value) and "length" not in key else value
        for key, value in batch.items()
    }
    images = normalize_images(out["image"])
    if flip is not None:
        mask = flip.to(device, non_blocking=True)[:, None, None, None]
        images = torch.where(mask, images.flip(-1), images)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    out["image"] = images
    return out


def flip_mask(batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """B bool, each True with probability 1/2 (the paper's random horizontal flip)."""
    return torch.rand(batch_size, generator=generator) < 0.5


def device_generator(device: torch.device, seed: int) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (sampling there needs no host-to-device copy)."""
    return torch.Generator(device=device).manual_seed(seed)
