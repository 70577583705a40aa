"""Image transforms of the paper: random horizontal flip (training), bicubic resize, normalise."""

from __future__ import annotations

from torchvision import transforms as T

MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def build_transforms(height: int, width: int, train: bool, flip: bool = True) -> T.Compose:
    """PIL RGB image -> normalised float tensor 3 x ``height`` x ``width`` (values in [-1, 1]).

    Args:
        height, width: output size in pixels (the paper: 384 x 128).
        train: add the random horizontal flip (when ``flip``).
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    steps = [T.RandomHorizontalFlip()] if train and flip else []
    steps += [
        T.Resize((height, width), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
        T.ToTensor(),
        T.Normalize(MEAN, STD),
    ]
    return T.Compose(steps)
