"""Safe image checking and loading: any mode in, RGB out, decompression bombs refused.

The size limit is local (``max_pixels``, default :data:`MAX_PIXELS`): the size is read from the
header and checked before any pixel is decoded, so a 50,000 x 50,000 header is refused without
allocating memory, whatever Pillow's global ``Image.MAX_IMAGE_PIXELS`` says.
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from ssan.errors import DataError

MAX_PIXELS = 40_000_000  # about 6,300 x 6,300; pedestrian crops are far smaller
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class ImageError(DataError):
    """An unusable image file: ``path`` and a short ``reason`` (the message names both)."""

    def __init__(self, path: Union[str, Path], reason: str):
        super().__init__(f"image {path}: {reason}")
        self.path = str(path)
        self.reason = reason


# Pillow's decoders raise many exception types on hostile or damaged files (OSError, SyntaxError,
# struct.error, IndexError...): any of them while reading a file means the file is unusable.
_ERRORS = (Exception,)


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and check the size; the caller must close the image."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"{exc.strerror or exc}") from None
    except ValueError:  # a NUL character in the name
        raise ImageError(repr(str(path)), "invalid file name") from None
    if not path.is_file():
        raise ImageError(path, "not a regular file")
    if size == 0:
        raise ImageError(path, "file is empty")
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise ImageError(path, "refused, too many pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise ImageError(path, "not an image file (unknown format)") from None
    except _ERRORS as exc:
        raise ImageError(path, f"cannot open ({exc or type(exc).__name__})") from None
    width, height = image.size
    if width < 1 or height < 1 or width * height > max_pixels:
        image.close()
        raise ImageError(path, f"refused, {width}x{height} exceeds the limit of {max_pixels} pixels")
    return image


def check_image(path: Union[str, Path], max_pixels: int = MAX_PIXELS) -> Tuple[int, int]:
    """Check that ``path`` is a readable image of sane size; returns ``(width, height)``.

    The header is read and the size checked first; then the data is decoded (JPEGs at reduced
    scale, which is cheap) so truncated files are caught too. Raises DataError naming the file.
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        size = image.size
        try:
            if image.format == "JPEG" and image.mode in ("RGB", "L", "CMYK"):
                image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
        except _ERRORS as exc:
            raise ImageError(path, f"cannot decode ({exc or type(exc).__name__})") from None
        return size


def load_rgb(path: Union[str, Path], max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Load any image as 8-bit RGB.

    Modes handled: 1, L, P (with or without transparency), LA, PA, RGBA (alpha dropped, as the
    reference pipelines do), CMYK (JPEG included), YCbCr, 16-bit (I;16*) and 32-bit (I, F)
    greyscale (scaled to 8 bits), animated images (first frame). Raises DataError naming the file.
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        try:
            image.seek(0)
            image.load()
            return _to_rgb(image)
        except DataError:
            raise
        except _ERRORS as exc:
            raise ImageError(path, f"cannot decode ({exc or type(exc).__name__})") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return Image.fromarray(_wide_to_uint8(np.asarray(image), mode)).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise ImageError(getattr(image, "filename", "") or "?", f"unsupported mode {mode} ({exc})") from None


def _wide_to_uint8(array: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16/32-bit integer or float greyscale array to 0..255."""
    array = array.astype(np.float64)
    if mode in _SIXTEEN_BIT:
        scale = 65535.0
    elif mode == "F":
        scale = 1.0 if array.size and np.nanmax(array) <= 1.0 else 255.0
    else:
        scale = 255.0 if not array.size or array.max() <= 255 else 65535.0
    array = np.nan_to_num(array, nan=0.0) * (255.0 / scale)
    return np.clip(np.rint(array), 0, 255).astype(np.uint8)
