"""Faults catalogue, images as hostile input: in the image loader, ``prepare`` and ``index``.

Files: zero bytes, text named .jpg, truncated JPEG and PNG, decompression bombs (PNG, GIF and JPEG
headers claiming 50,000 x 50,000 pixels, built without allocating them, and a PNG whose text chunk
inflates to 20 MB), and odd but valid images (1x1, greyscale, CMYK JPEG, 16-bit PNG, animated GIF,
palette with transparency, RGBA, LA, bilevel, a JPEG named .png). Bad files give a per-file error
naming them, good ones load as RGB, nothing crashes, and a process handling the bombs stays far
from a gigabyte (ru_maxrss of a subprocess).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_cli
from ssan.data import ImageError, build_transforms, check_image, load_rgb

BOMB_SIDE = 50_000
MB = 1024 * 1024
GOOD = (
    "one-pixel.png",
    "grey.png",
    "cmyk.jpg",
    "sixteen-bit.png",
    "animated.gif",
    "palette-transparent.png",
    "rgba.png",
    "la.png",
    "bilevel.bmp",
    "jpeg-named.png",
)


# ------------------------------------------------------------ file makers
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, rows: bytes, extra: bytes = b"") -> bytes:
    """A PNG (8-bit RGB) with the given IHDR size and raw filtered rows, built by hand."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + extra + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b"")


def gif_bomb() -> bytes:
    """A GIF whose screen and frame claim 50,000 x 50,000 pixels (a few dozen bytes)."""
    screen = b"GIF89a" + struct.pack("<HH", BOMB_SIDE, BOMB_SIDE) + bytes([0x80, 0, 0]) + b"\0\0\0\xff\xff\xff"
    frame = b"," + struct.pack("<HHHH", 0, 0, BOMB_SIDE, BOMB_SIDE) + b"\0" + b"\x02\x02\x4c\x01\x00"
    return screen + frame + b";"


def jpeg_bomb(path: Path) -> bytes:
    """A real JPEG whose SOF0 header is rewritten to claim 50,000 x 50,000 pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", BOMB_SIDE, BOMB_SIDE)
    return bytes(data)


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def make_bad(folder: Path) -> dict:
    """Files that must be refused, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    jpeg, png = io.BytesIO(), io.BytesIO()
    noise(64, 48).save(jpeg, "JPEG", quality=90)
    noise(64, 48, 1).save(png, "PNG")
    files = {
        "zero.jpg": b"",
        "text.jpg": b"this is not an image, only text named .jpg\n",
        "truncated.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) * 6 // 10],
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "bomb.png": png_bytes(BOMB_SIDE, BOMB_SIDE, b"\0" * 1024),
        "bomb.gif": gif_bomb(),
        "bomb.jpg": jpeg_bomb(folder),
        "ztxt-bomb.png": png_bytes(1, 1, b"\0\0\0\0", _chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a" * 20 * MB))),
        "random.png": np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "folder.png").mkdir(exist_ok=True)  # a directory with an image name
    return files


def make_good(folder: Path) -> dict:
    """Odd but valid images, by name: ``{name: (width, height)}``."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1), (255, 0, 0)).save(folder / "one-pixel.png")
    Image.new("L", (16, 32), 128).save(folder / "grey.png")
    Image.new("CMYK", (16, 32), (0, 128, 255, 10)).save(folder / "cmyk.jpg")
    Image.fromarray(np.arange(512, dtype=np.uint16).reshape(32, 16) * 120).save(folder / "sixteen-bit.png")
    frames = [Image.new("RGB", (16, 32), (i * 80, 0, 0)) for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    palette = Image.new("P", (16, 32), 0)
    palette.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    palette.save(folder / "palette-transparent.png", transparency=0)
    Image.new("RGBA", (16, 32), (0, 255, 0, 0)).save(folder / "rgba.png")
    Image.new("LA", (16, 32), (90, 200)).save(folder / "la.png")
    Image.new("1", (16, 32), 1).save(folder / "bilevel.bmp")
    noise(16, 32).save(folder / "jpeg-named.png", "JPEG")
    return {name: (1, 1) if name == "one-pixel.png" else (16, 32) for name in GOOD}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """``(folder, bad names, good sizes)``: every hostile image in one folder."""
    folder = tmp_path_factory.mktemp("hostile-images") / "gallery"
    bad = make_bad(folder)
    good = make_good(folder)
    assert (folder / "bomb.png").stat().st_size < 2000 and (folder / "bomb.gif").stat().st_size < 100
    return folder, sorted(bad) + ["folder.png"], good


# ----------------------------------------------------------------- loader
def test_loader_refuses_bad_files_naming_them(hostile, record_property):
    folder, bad, _ = hostile
    for name in bad:
        for function in (check_image, load_rgb):
            with pytest.raises(ImageError) as info:
                function(folder / name)
            assert name in str(info.value) and info.value.reason
    for odd in ("missing.png", "a\x00b.png", "x" * 300 + ".png"):  # absent, NUL in the name, name too long
        with pytest.raises(ImageError):
            load_rgb(folder / odd)
    record_property("cases", 2 * len(bad) + 3)


def test_loader_reads_odd_images_as_rgb(hostile, record_property):
    folder, _, good = hostile
    transform = build_transforms(64, 32, train=False)
    for name, size in good.items():
        assert check_image(folder / name) == size
        image = load_rgb(folder / name)
        assert image.mode == "RGB" and image.size == size
        assert transform(image).shape == (3, 64, 32)
    sixteen = np.asarray(load_rgb(folder / "sixteen-bit.png"))
    assert sixteen.max() > 200 and sixteen.min() == 0  # scaled to 8 bits, not clipped to white
    record_property("cases", len(good))


# ---------------------------------------------------------------- prepare
def _dataset(root: Path, folder: Path, names: list) -> None:
    """A CUHK-PEDES layout whose records point at the hostile gallery plus four plain images."""
    imgs = root / "imgs"
    (imgs / "plain").mkdir(parents=True)
    (imgs / "odd").symlink_to(folder, target_is_directory=True)
    records = []
    for i in range(4):
        noise(16, 32, i).save(imgs / "plain" / f"{i}.png")
        records.append(
            {"split": "train", "captions": ["a man in a red shirt"], "file_path": f"plain/{i}.png", "id": i // 2}
        )
    for name in names:
        records.append({"split": "train", "captions": ["a woman with a red bag"], "file_path": f"odd/{name}", "id": 9})
    (root / "reid_raw.json").write_text(json.dumps(records))


def test_prepare_reports_each_bad_image_and_skips_them(hostile, tmp_path, record_property):
    folder, bad, good = hostile
    _dataset(tmp_path / "ds", folder, sorted(good) + bad)
    out = tmp_path / "prepared"
    code, _, err = run_cli("prepare", "--dataset", "cuhk-pedes", "--root", tmp_path / "ds", "--out", out)
    assert code == 2 and err.startswith("ssan prepare: error: ") and "Traceback" not in err
    assert f"{len(bad)} problem(s)" in err and not out.exists()
    for name in bad:
        assert f"odd/{name}" in err
    for name in good:
        assert f"odd/{name}:" not in err
    code, _, err = run_cli(
        "prepare", "--dataset", "cuhk-pedes", "--root", tmp_path / "ds", "--out", out, "--skip-invalid"
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(s["file"]).name for s in summary["skipped"]) == sorted(bad)
    kept = [json.loads(line)["image"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert sorted(Path(k).name for k in kept if k.startswith("odd/")) == sorted(good)
    record_property("cases", 2 * (len(bad) + len(good)))


# ------------------------------------------------------------------ index
def test_index_skips_bad_images_with_warnings(hostile, tiny_checkpoint, tmp_path, record_property):
    folder, bad, good = hostile
    out = tmp_path / "index"
    code, stdout, err = run_cli(
        "index",
        "--images",
        folder,
        "--checkpoint",
        tiny_checkpoint,
        "--out",
        out,
        "--no-progress",
        "--device",
        "cpu",
        "--batch-size",
        "4",
    )
    assert code == 0, err
    assert "Traceback" not in err
    meta = json.loads((out / "meta.json").read_text())
    assert sorted(e["name"] for e in meta["entries"]) == sorted(good)
    skipped = sorted(Path(s["path"]).name for s in meta["skipped"])
    files = [name for name in bad if (folder / name).is_file()]  # a directory is not a file: not even listed
    assert skipped == sorted(files)
    for name in files:
        assert name in err
    assert f"skipped {len(files)} file(s)" in stdout
    record_property("cases", len(bad) + len(good))


# ----------------------------------------------------------------- memory
# ru_maxrss survives fork + exec on Linux: a child forked from this (large) pytest process would
# report pytest's peak. A small launcher forks the measured command and reports its children's.
LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def _max_rss_mb(args: list, cwd: Path) -> tuple:
    """Run a command; returns (exit status, its peak resident memory in MiB (ru_maxrss), stderr)."""
    proc = subprocess.run([sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    return proc.returncode, int(proc.stdout.strip().splitlines()[-1]) / 1024, proc.stderr


LOAD_ALL = """
import sys
from ssan.data.images import ImageError, check_image, load_rgb
for name in sys.argv[1:]:
    for function in (check_image, load_rgb):
        try:
            function(name)
        except ImageError:
            pass
"""


def _index_rss(files: list, checkpoint: Path, folder: Path) -> float:
    gallery = folder / "gallery"
    gallery.mkdir(parents=True)
    for name in files:
        os.link(name, gallery / Path(name).name)
    Image.new("RGB", (16, 32)).save(gallery / "good.png")
    code, peak, err = _max_rss_mb(
        [
            sys.executable,
            "-m",
            "ssan",
            "index",
            "--images",
            str(gallery),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(folder / "index"),
            "--device",
            "cpu",
            "--no-progress",
        ],
        folder,
    )
    assert code == 0 and "Traceback" not in err, err
    return peak


@pytest.mark.slow
def test_bombs_stay_far_from_a_gigabyte(hostile, tiny_checkpoint, tmp_path, record_property):
    """Peak memory (ru_maxrss) with the bombs vs the same process on a 1x1 image: no more than noise."""
    folder, _, _ = hostile
    bombs = [str(folder / name) for name in ("bomb.png", "bomb.gif", "bomb.jpg", "ztxt-bomb.png")]
    code, bomb_mb, err = _max_rss_mb([sys.executable, "-c", LOAD_ALL, *bombs], tmp_path)
    assert code == 0, err
    code, base_mb, err = _max_rss_mb([sys.executable, "-c", LOAD_ALL, str(folder / "one-pixel.png")], tmp_path)
    assert code == 0, err
    assert bomb_mb - base_mb < 64, (bomb_mb, base_mb)  # the 7.5 GB of pixels were never allocated
    index_mb = _index_rss(bombs, tiny_checkpoint, tmp_path / "bombs")
    index_base_mb = _index_rss([], tiny_checkpoint, tmp_path / "plain")
    # Relative only: the baseline run measures this machine's imports (torch alone can differ by
    # hundreds of MB between installs); the bombs must add no more than noise on top of it.
    assert index_mb - index_base_mb < 64, (index_mb, index_base_mb)
    record_property("cases", len(bombs) * 3)
    record_property(
        "rss_mb",
        f"loader {bomb_mb:.0f} vs {base_mb:.0f} on a 1x1 image; "
        f"ssan index {index_mb:.0f} vs {index_base_mb:.0f} without the bombs",
    )


def _digests(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_no_data_lost_bad_images_leave_outputs_intact(hostile, tiny_checkpoint, tmp_path, record_property):
    """A prepare that fails on bad images keeps the previous output; adding only bad images keeps the index."""
    folder, bad, good = hostile
    _dataset(tmp_path / "ds", folder, sorted(good))
    out = tmp_path / "prepared"
    assert run_cli("prepare", "--dataset", "cuhk-pedes", "--root", tmp_path / "ds", "--out", out)[0] == 0
    before = _digests(out)
    records = json.loads((tmp_path / "ds" / "reid_raw.json").read_text())
    records += [{"split": "train", "captions": ["a red bag"], "file_path": f"odd/{n}", "id": 9} for n in bad]
    (tmp_path / "ds" / "reid_raw.json").write_text(json.dumps(records))
    code, _, err = run_cli("prepare", "--dataset", "cuhk-pedes", "--root", tmp_path / "ds", "--out", out)
    assert code == 2 and "Traceback" not in err
    assert _digests(out) == before
    plain = tmp_path / "plain"
    plain.mkdir()
    noise(16, 32).save(plain / "a.png")
    index = tmp_path / "index"
    assert (
        run_cli(
            "index",
            "--images",
            plain,
            "--checkpoint",
            tiny_checkpoint,
            "--out",
            index,
            "--no-progress",
            "--device",
            "cpu",
        )[0]
        == 0
    )
    before = _digests(index)
    broken = tmp_path / "broken"
    make_bad(broken)
    code, _, err = run_cli(
        "index",
        "--images",
        broken,
        "--checkpoint",
        tiny_checkpoint,
        "--out",
        index,
        "--add",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert code in (0, 2) and "Traceback" not in err
    assert _digests(index) == before
    record_property("cases", 2)
