"""Image transforms of the paper: random horizontal flip, bicubic resize, normalise (mean 0.5, std 0.5).

Training and evaluation read images as ``uint8`` tensors (a quarter of the bytes through the
loader and the host-to-device copy) and normalise them on the device with
:func:`normalize_images`; the result is bit-identical to torchvision's ``ToTensor`` followed by
``Normalize(MEAN, STD)``. The random flip is drawn per training step by the trainer.
"""

from __future__ import annotations

import torch
from torchvision import transforms as T

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
assert len(set(MEAN)) == len(set(STD)) == 1  # normalize_images relies on one value per statistic


def build_transforms(height: int, width: int, train: bool, flip: bool = True, uint8: bool = False) -> T.Compose:
    """PIL RGB image -> 3 x ``height`` x ``width`` tensor.

    Args:
        height, width: output size in pixels (the paper: 384 x 128).
        train: add the random horizontal flip (when ``flip``).
        uint8: return the resized pixels as ``uint8`` (normalise later with
            :func:`normalize_images`) instead of normalised float values in [-1, 1].
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    steps = [T.RandomHorizontalFlip()] if train and flip else []
    steps.append(T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC, antialias=True))
    steps += [T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


def normalize_images(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """B x 3 x H x W ``uint8`` pixels -> normalised ``dtype`` values in [-1, 1] (float input passes through)."""
    if images.dtype != torch.uint8:
        return images.to(dtype)
    # the same mean and std for every channel: Python scalars, so no host-to-device copy
    return images.to(dtype).div_(255).sub_(MEAN[0]).div_(STD[0])
