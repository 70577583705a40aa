"""The CLIP-era training augmentations (IRRA's), batched on the training device.

- pad + random crop: the image padded with black by ``pad`` pixels on every side, then cropped
  back to its size at a random offset (``data.pad_crop``);
- random erasing: with probability ``data.erase_prob`` one rectangle of area ``erase_scale`` x the
  image and aspect ratio in (0.3, 3.3) (log-uniform; ten tries to fit, else none, as torchvision's
  ``RandomErasing``) is filled with the colour ``data.erase_fill`` (the presets: the normalisation
  mean, i.e. 0 after CLIP's normalisation).

Every random number is drawn for the *global* batch from the step's shared generator and each
process takes its rows, as for the flips: a DDP run sees the augmentations of a single-process
run, and a resumed run those of an uninterrupted one. Images arrive normalised (mean 0.5, std 0.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ssan.data.transforms import MEAN, STD

ERASE_RATIO = (0.3, 3.3)
ERASE_TRIES = 10


@dataclass(frozen=True)
class AugmentDraws:
    """Per-image random numbers of one step (CPU tensors of the rows this process trains)."""

    offsets: Optional[torch.Tensor] = None  # B x 2 crop offsets (rows, columns) in 0..2*pad
    boxes: Optional[torch.Tensor] = None  # B x 4 erased (top, left, height, width); height 0 = none


def draw_augmentations(data, batch_size: int, generator: torch.Generator, rows: slice) -> AugmentDraws:
    """The draws of ``data``'s augmentations (a :class:`ssan.config.DataConfig`) for a global batch, sliced."""
    offsets = boxes = None
    if data.pad_crop > 0:
        offsets = torch.randint(0, 2 * data.pad_crop + 1, (batch_size, 2), generator=generator)[rows]
    if data.erase_prob > 0:
        boxes = _erase_boxes(data, batch_size, generator)[rows]
    return AugmentDraws(offsets, boxes)


def _erase_boxes(data, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    height, width = data.height, data.width
    low, high = data.erase_scale
    apply = torch.rand(batch_size, generator=generator) < data.erase_prob
    area = height * width * (low + (high - low) * torch.rand(batch_size, ERASE_TRIES, generator=generator))
    log_ratio = math.log(ERASE_RATIO[0]) + (math.log(ERASE_RATIO[1]) - math.log(ERASE_RATIO[0])) * torch.rand(
        batch_size, ERASE_TRIES, generator=generator
    )
    ratio = log_ratio.exp()
    h = (area * ratio).sqrt().round().long()
    w = (area / ratio).sqrt().round().long()
    fits = (h < height) & (w < width) & (h > 0) & (w > 0)
    first = fits.long().argmax(dim=1)  # the first try that fits
    pick = torch.arange(batch_size)
    h, w = h[pick, first], w[pick, first]
    keep = apply & fits.any(dim=1)
    top = (torch.rand(batch_size, generator=generator) * (height - h + 1)).long().clamp_max(height - 1)
    left = (torch.rand(batch_size, generator=generator) * (width - w + 1)).long().clamp_max(width - 1)
    return torch.stack([top, left, torch.where(keep, h, 0), torch.where(keep, w, 0)], dim=1)


def pad_crop(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """B x C x H x W normalised images, black-padded by ``pad`` and cropped at ``offsets`` (B x 2)."""
    batch, channels, height, width = images.shape
    black = (0.0 - MEAN[0]) / STD[0]
    padded = F.pad(images, (pad, pad, pad, pad), value=black)
    offsets = offsets.to(images.device, non_blocking=True)
    rows = offsets[:, :1] + torch.arange(height, device=images.device)  # B x H
    cols = offsets[:, 1:] + torch.arange(width, device=images.device)  # B x W
    picked = padded.gather(2, rows[:, None, :, None].expand(batch, channels, height, width + 2 * pad))
    return picked.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def erase(images: torch.Tensor, boxes: torch.Tensor, fill) -> torch.Tensor:
    """Fill each image's box (B x 4: top, left, height, width) with the RGB colour ``fill`` (0..1)."""
    boxes = boxes.to(images.device, non_blocking=True)
    top, left, h, w = (boxes[:, i, None, None] for i in range(4))
    ys = torch.arange(images.size(2), device=images.device)[None, :, None]
    xs = torch.arange(images.size(3), device=images.device)[None, None, :]
    inside = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)
    colour = torch.tensor([(c - m) / s for c, m, s in zip(fill, MEAN, STD)], dtype=images.dtype)
    return torch.where(inside[:, None], colour.to(images.device, non_blocking=True)[None, :, None, None], images)


def augment_images(images: torch.Tensor, data, draws: AugmentDraws) -> torch.Tensor:
    """``images`` with the augmentations of ``draws`` applied (pad-crop, then erasing)."""
    if draws.offsets is not None:
        images = pad_crop(images, draws.offsets, data.pad_crop)
    if draws.boxes is not None:
        images = erase(images, draws.boxes, data.erase_fill)
    return images
