"""Safe image loading: every mode becomes RGB; bad files and bombs give a DataError naming the file."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ssan.data.images import ImageError, check_image, load_rgb
from ssan.errors import DataError


def _png_header_only(width, height):
    """A PNG whose header claims ``width`` x ``height`` but holds almost no data."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _noise(h=24, w=12):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _make(mode, path):
    rgb = Image.fromarray(_noise())
    if mode == "I;16":
        array = np.arange(24 * 12, dtype=np.uint16).reshape(24, 12) * 200
        Image.fromarray(array).save(path)
    elif mode == "CMYK":
        rgb.convert("CMYK").save(path, quality=95)
    elif mode == "GIF":
        frames = [rgb.convert("P"), Image.new("RGB", (12, 24), (0, 255, 0)).convert("P")]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    elif mode == "P-transparent":
        p = rgb.convert("P")
        p.info["transparency"] = 0
        p.save(path, transparency=0)
    elif mode == "F":
        Image.fromarray(np.linspace(0, 1, 24 * 12, dtype=np.float32).reshape(24, 12), "F").save(path)
    else:
        rgb.convert(mode).save(path)


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("RGB", ".png"),
        ("RGB", ".jpg"),
        ("L", ".png"),
        ("LA", ".png"),
        ("RGBA", ".png"),
        ("P", ".png"),
        ("P-transparent", ".png"),
        ("1", ".png"),
        ("CMYK", ".jpg"),
        ("I;16", ".png"),
        ("GIF", ".gif"),
        ("F", ".tif"),
        ("RGB", ".bmp"),
        ("RGB", ".webp"),
    ],
)
def test_every_mode_loads_as_rgb(tmp_path, mode, suffix):
    path = tmp_path / f"image{suffix}"
    _make(mode, path)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (12, 24)
    assert check_image(path) == (12, 24)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    image = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert image.mode == "I;16"
    image.save(path)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [128, 128, 128]


def test_animated_gif_gives_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert np.asarray(load_rgb(path))[0, 0].tolist() == [255, 0, 0]


def test_rgb_pixels_are_preserved(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_noise()).save(path)
    assert np.array_equal(np.asarray(load_rgb(path)), _noise())


def _bad(tmp_path, kind):
    path = tmp_path / f"{kind}.png"
    good = tmp_path / "good.png"
    Image.fromarray(_noise(64, 32)).save(good)
    if kind == "missing":
        return path, "file not found"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "file is empty"
    if kind == "text":
        path.write_text("this is not an image")
        return path, "not an image file"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:200])
        return path, "cannot decode"
    if kind == "truncated-jpeg":
        path = tmp_path / "t.jpg"
        Image.fromarray(_noise(64, 32)).save(path, quality=90)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        return path, "cannot decode"
    if kind == "directory":
        path.mkdir()
        return path, "not a regular file"
    if kind == "bomb":
        path.write_bytes(_png_header_only(50_000, 50_000))
        return path, "refused"
    if kind == "large":
        path.write_bytes(_png_header_only(9_000, 9_000))
        return path, "9000x9000 exceeds the limit"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["missing", "empty", "text", "truncated", "truncated-jpeg", "directory", "bomb", "large"]
)
@pytest.mark.parametrize("function", [check_image, load_rgb])
def test_bad_files_raise_data_error_naming_the_file(tmp_path, kind, function):
    path, reason = _bad(tmp_path, kind)
    with pytest.raises(ImageError, match=reason) as info:
        function(path)
    assert str(path) in str(info.value) and isinstance(info.value, DataError)
    assert reason in info.value.reason


def test_bomb_refused_even_without_pillow_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50_000, 50_000))
    with pytest.raises(ImageError, match="50000x50000 exceeds the limit"):
        check_image(path)


def test_local_pixel_limit(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(_noise(64, 32)).save(path)
    assert check_image(path, max_pixels=64 * 32) == (32, 64)
    with pytest.raises(ImageError, match="exceeds the limit of 100 pixels"):
        load_rgb(path, max_pixels=100)
