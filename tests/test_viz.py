"""Pictures: retrieval sheets, training curves and word-attention maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssan.errors import SsanError
from ssan.viz import (
    MATCH_COLOUR,
    MISS_COLOUR,
    _ceiling_r1,
    _curves_figure,
    _group_series,
    attention_picture,
    retrieval_sheet,
    track_sheet,
    training_curves,
)


def _person(colour) -> Image.Image:
    return Image.new("RGB", (32, 64), colour)


def _colour_pixels(path, hex_colour: str, tolerance: int = 30) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - rgb).max(axis=-1) <= tolerance).sum())


def test_retrieval_sheet_frames_matches_green_and_misses_red(tmp_path):
    image_file = tmp_path / "person.png"
    _person((40, 40, 200)).save(image_file)
    queries = [
        {
            "caption": "a man in a blue shirt and black trousers carrying a very long description " * 3,
            "results": [
                (image_file, True, 2.5),
                (_person((200, 200, 200)), False, 1.9),
                (_person((9, 9, 9)), None, 1.2),
            ],
        },
        {"caption": "a woman", "results": [(_person((250, 250, 0)), False, 0.7)]},
    ]
    out = retrieval_sheet(queries, tmp_path / "sheets" / "sheet.png", top_k=10)
    assert out.is_file()
    assert _colour_pixels(out, MATCH_COLOUR) > 50
    assert _colour_pixels(out, MISS_COLOUR) > 100
    plain = retrieval_sheet([{"caption": "x", "results": [(_person((9, 9, 9)), None, 0.1)]}], tmp_path / "p.png")
    assert _colour_pixels(plain, MATCH_COLOUR) == 0 and _colour_pixels(plain, MISS_COLOUR) == 0


def test_retrieval_sheet_respects_top_k_and_survives_unreadable_files(tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    results = [(broken, False, 1.0)] + [(_person((i * 20, 0, 0)), False, 0.5) for i in range(8)]
    small = retrieval_sheet([{"caption": "q", "results": results}], tmp_path / "k2.png", top_k=2)
    large = retrieval_sheet([{"caption": "q", "results": results}], tmp_path / "k9.png", top_k=9)
    assert Image.open(small).width < Image.open(large).width
    assert "broken.png" in caplog.text


def test_retrieval_sheet_rejects_empty_input(tmp_path):
    with pytest.raises(SsanError):
        retrieval_sheet([], tmp_path / "x.png")
    with pytest.raises(SsanError):
        retrieval_sheet([{"caption": "q", "results": []}], tmp_path / "x.png", top_k=0)


def test_training_curves_group_keys_by_prefix(tmp_path):
    rows = [
        {"epoch": 1, "loss/total": 3.0, "loss/id_global": 2.0, "lr": 1e-3, "time": 4.0, "note": "text"},
        {"epoch": 2, "loss/total": 2.0, "loss/id_global": 1.5, "lr": 1e-3, "val/sum/R1": 20.0, "val/sum/mAP": 15.0},
        {"epoch": 3, "loss/total": 1.0, "loss/id_global": 1.0, "lr": 1e-4, "test": {"sum": {"R1": 30.0}}},
    ]
    groups = _group_series(rows)
    assert list(groups) == ["loss", "lr", "time", "val/sum", "test/sum"]
    assert groups["loss"]["loss/total"] == ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert list(groups["val/sum"]) == ["val/sum/R1", "val/sum/mAP"]
    assert groups["val/sum"]["val/sum/R1"] == ([2.0], [20.0])
    assert groups["test/sum"]["test/sum/R1"] == ([3.0], [30.0])
    assert groups["lr"]["lr"] == ([1.0, 2.0, 3.0], [1e-3, 1e-3, 1e-4])
    assert training_curves(rows, tmp_path / "curves.png").stat().st_size > 0


CURVE_ROWS = [
    {"epoch": epoch, "loss/total": 4.0 - epoch, "lr": 1e-3, "val/sum/R1": 20.0 * epoch, "val/sum/mAP": 15.0 * epoch}
    for epoch in (1, 2, 3, 4)
]


def _panels(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_title()}


def test_training_curves_have_integer_epoch_ticks():
    panels = _panels(_curves_figure(_group_series(CURVE_ROWS), None))
    for ax in panels.values():
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0, 2.0, 3.0, 4.0]
        assert ax.get_xlabel() == "epoch"
    assert not any(line.get_label() == "ceiling" for ax in panels.values() for line in ax.get_lines())


@pytest.mark.parametrize("ceiling", [97.5, {"R1": 97.5, "R5": 100.0, "mAP": 98.0}])
def test_training_curves_draw_the_ceiling_beside_the_evaluation_r1(tmp_path, ceiling):
    panels = _panels(_curves_figure(_group_series(CURVE_ROWS), _ceiling_r1(ceiling)))
    lines = [line for line in panels["val/sum"].get_lines() if line.get_label() == "ceiling"]
    assert len(lines) == 1 and lines[0].get_linestyle() == "--"
    assert list(lines[0].get_ydata()) == [97.5, 97.5]
    assert "ceiling" in [t.get_text() for t in panels["val/sum"].get_legend().get_texts()]
    assert not any(line.get_label() == "ceiling" for line in panels["loss"].get_lines() + panels["lr"].get_lines())
    assert training_curves(CURVE_ROWS, tmp_path / "c.png", ceiling=ceiling).stat().st_size > 0


def test_training_curves_refuse_a_ceiling_without_r1(tmp_path):
    with pytest.raises(SsanError, match="ceiling"):
        training_curves(CURVE_ROWS, tmp_path / "c.png", ceiling={"mAP": 90.0})
    with pytest.raises(SsanError, match="ceiling"):
        training_curves(CURVE_ROWS, tmp_path / "c.png", ceiling=float("nan"))


def test_training_curves_without_numbers_is_a_clear_error(tmp_path):
    with pytest.raises(SsanError, match="no numeric"):
        training_curves([{"epoch": 1, "note": "x"}], tmp_path / "c.png")


def test_attention_picture_accepts_arrays_and_tensors(tmp_path):
    words = ["a", "man", "in", "black", "shoes"]
    out = attention_picture(words, torch.rand(6, 5), tmp_path / "att.png", title="a man in black shoes")
    assert Image.open(out).size[0] > 100
    attention_picture(words, np.random.rand(6, 5).tolist(), tmp_path / "att2.png")
    with pytest.raises(SsanError, match="K x 5"):
        attention_picture(words, np.random.rand(6, 4), tmp_path / "bad.png")


def _box_of(pixels: np.ndarray, rgb) -> tuple:
    """(top, bottom, left, right) of the pixels of colour ``rgb`` (nearly)."""
    rows, cols = np.nonzero(np.abs(pixels - np.array(rgb)).max(axis=-1) <= 12)
    return rows.min(), rows.max(), cols.min(), cols.max()


def test_track_sheet_is_compact_crop_beside_frame_at_the_same_height(tmp_path):
    """No empty band over the rows; the crop is as tall as the frame and right beside it."""
    crop = Image.new("RGB", (32, 64), (200, 30, 30))
    frame = Image.new("RGB", (256, 144), (30, 30, 200))
    hits = [{"crop": crop, "frame": frame, "box": (10, 10, 20, 40), "title": f"{i}. street track {i}"} for i in (1, 2)]
    pixels = np.asarray(Image.open(track_sheet("a man in a red coat", hits, tmp_path / "s.png")).convert("RGB"))
    pixels = pixels.astype(int)
    top, bottom, left, right = _box_of(pixels, (200, 30, 30))  # both crops
    f_top, f_bottom, f_left, _ = _box_of(pixels, (30, 30, 200))
    assert top < 0.12 * pixels.shape[0], (top, pixels.shape)  # the first row starts under the title
    assert abs(top - f_top) <= 2 and abs(bottom - f_bottom) <= 2  # the crops as tall as the frames
    first_crop = np.nonzero(np.abs(pixels[:, left] - (200, 30, 30)).max(axis=-1) <= 12)[0]
    row_height = int(np.argmax(np.diff(first_crop) > 1)) + 1  # the first crop's height in pixels
    assert row_height >= 150 and (right - left + 1) >= row_height * 0.45  # readable, not a sliver
    assert 0 <= f_left - right <= 15  # side by side: no wide gap between crop and frame
