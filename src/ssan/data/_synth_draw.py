"""Drawing one synthetic pedestrian image with PIL, directly at the target size.

Body geometry is expressed in fractions of the figure height ``fh`` (0 = top of the head,
1 = soles). Nuisances drawn per image: pose (arm swing, stride), position, scale, background,
lighting (brightness, contrast, white balance), blur, noise and horizontal flip.
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from ssan.data._synth_people import COLOURS, HAIR_COLOURS, SKIN_TONES, Person

RGB = Tuple[int, int, int]


def _shade(rgb: RGB, factor: float) -> RGB:
    """Darker (factor < 1) or lighter (factor > 1, towards white) version of a colour."""
    if factor <= 1:
        return tuple(int(c * factor) for c in rgb)
    return tuple(int(c + (255 - c) * (factor - 1)) for c in rgb)


class _Figure:
    """Maps figure fractions to pixels and draws body parts."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, top: float, fh: float):
        self.draw, self.cx, self.top, self.fh = draw, cx, top, fh

    def y(self, f: float) -> float:
        return self.top + f * self.fh

    def w(self, f: float) -> float:
        return f * self.fh

    def quad(self, x0: float, y0: float, x1: float, y1: float, w0: float, w1: float, fill: RGB) -> None:
        """A limb from (x0, y0) to (x1, y1), width w0 at the start and w1 at the end (pixels)."""
        dx, dy = x1 - x0, y1 - y0
        norm = math.hypot(dx, dy) or 1.0
        px, py = -dy / norm / 2, dx / norm / 2
        self.draw.polygon(
            [
                (x0 + px * w0, y0 + py * w0),
                (x1 + px * w1, y1 + py * w1),
                (x1 - px * w1, y1 - py * w1),
                (x0 - px * w0, y0 - py * w0),
            ],
            fill=fill,
        )

    def box(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.draw.rectangle([x0, y0, x1, y1], fill=fill)


def _background(height: int, width: int, rng: np.random.Generator) -> Image.Image:
    """Desaturated street-like background: two-tone gradient plus a few blocks."""
    grey = rng.uniform(70, 190)
    base = grey * 0.6 + rng.uniform(40, 220, size=3) * 0.4
    ground = grey * 0.7 + rng.uniform(50, 200, size=3) * 0.3
    horizon = int(height * rng.uniform(0.55, 0.85))
    rows = np.linspace(-1, 1, height)[:, None] * rng.uniform(-18, 18)
    array = np.empty((height, width, 3), dtype=np.float32)
    array[:horizon] = base + rows[:horizon, :, None]
    array[horizon:] = ground + rows[horizon:, :, None] * 0.5
    for _ in range(int(rng.integers(1, 4))):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, horizon + 1, size=2))
        array[y0 : y1 + 1, x0 : x1 + 1] = array[y0 : y1 + 1, x0 : x1 + 1] * 0.6 + rng.uniform(60, 200, size=3) * 0.4
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def _legs(fig: _Figure, person: Person, col: dict, stride: float) -> None:
    cx, w = fig.cx, fig.w
    hips = (cx - w(0.055), cx + w(0.055))
    ankles = (hips[0] - stride / 2, hips[1] + stride / 2)
    covered = {"trousers": 0.93, "jeans": 0.93, "shorts": 0.70, "skirt": 0.58}[person.lower_type]
    for hip, ankle in zip(hips, ankles):
        fig.quad(hip, fig.y(0.52), ankle, fig.y(0.94), w(0.085), w(0.062), col["skin"])
        if covered > 0.6:
            t = (covered - 0.52) / 0.42
            fig.quad(
                hip, fig.y(0.50), hip + (ankle - hip) * t, fig.y(covered), w(0.092), w(0.092 - 0.025 * t), col["lower"]
            )
            if person.lower_type == "jeans":
                fig.draw.line(
                    [(hip, fig.y(0.56)), (hip + (ankle - hip) * t, fig.y(covered))],
                    fill=_shade(col["lower"], 1.35),
                    width=1,
                )
        fig.box(ankle - w(0.05), fig.y(0.935), ankle + w(0.05), fig.y(1.0), col["shoes"])
    fig.box(cx - w(0.105), fig.y(0.48), cx + w(0.105), fig.y(0.58), col["lower"])
    if person.lower_type == "skirt":
        fig.draw.polygon(
            [
                (cx - w(0.11), fig.y(0.49)),
                (cx + w(0.11), fig.y(0.49)),
                (cx + w(0.165), fig.y(0.74)),
                (cx - w(0.165), fig.y(0.74)),
            ],
            fill=col["lower"],
        )


def _torso(fig: _Figure, person: Person, col: dict) -> None:
    cx, w, y = fig.cx, fig.w, fig.y
    bottom, half_bottom = (0.66, 0.135) if person.upper_type == "coat" else (0.51, 0.11)
    shoulder = 0.14
    fig.draw.polygon(
        [
            (cx - w(shoulder), y(0.16)),
            (cx + w(shoulder), y(0.16)),
            (cx + w(half_bottom), y(bottom)),
            (cx - w(half_bottom), y(bottom)),
        ],
        fill=col["upper"],
    )
    if person.pattern == "striped":
        step = max(2.0, w(0.05))
        row = y(0.19)
        while row < y(bottom) - 1:
            f = (row - y(0.16)) / (y(bottom) - y(0.16))
            half = w(shoulder + (half_bottom - shoulder) * f)
            fig.draw.line([(cx - half + 1, row), (cx + half - 1, row)], fill=col["stripe"], width=max(1, int(step / 2)))
            row += step
    if person.upper_type in ("jacket", "coat"):
        fig.draw.line([(cx, y(0.18)), (cx, y(bottom))], fill=_shade(col["upper"], 0.55), width=1)
    if person.upper_type in ("shirt", "jacket", "coat"):
        collar = _shade(col["upper"], 1.4 if person.upper_type == "shirt" else 0.7)
        fig.draw.polygon([(cx - w(0.06), y(0.155)), (cx + w(0.06), y(0.155)), (cx, y(0.23))], fill=collar)


def _arms(fig: _Figure, person: Person, col: dict, swing: float) -> None:
    w, y = fig.w, fig.y
    length = w(0.34) * math.cos(math.radians(swing * 2.5))  # swinging arms look shorter from the front
    for side, angle in ((-1, swing), (1, -swing)):
        x0, y0 = fig.cx + side * w(0.125), y(0.185)
        theta = math.radians(angle) + side * math.radians(7)
        x1, y1 = x0 + math.sin(theta) * length, y0 + math.cos(theta) * length
        fig.quad(x0, y0, x1, y1, w(0.075), w(0.06), col["skin"])
        cover = 0.92 if person.sleeves == "long" else 0.42
        fig.quad(x0, y0, x0 + (x1 - x0) * cover, y0 + (y1 - y0) * cover, w(0.08), w(0.07), col["upper"])
        if side == 1 and person.handbag:
            fig.box(x1 - w(0.02), y1 + w(0.01), x1 + w(0.09), y1 + w(0.1), col["handbag"])


def _head(fig: _Figure, person: Person, col: dict) -> None:
    cx, w, y = fig.cx, fig.w, fig.y
    r = w(0.062)
    if person.hair_length == "long":
        fig.box(cx - r * 1.12, y(0.06), cx + r * 1.12, y(0.25), col["hair"])
    fig.box(cx - w(0.025), y(0.12), cx + w(0.025), y(0.17), col["skin"])
    fig.draw.ellipse([cx - r, y(0.075) - r, cx + r, y(0.075) + r], fill=col["skin"])
    fig.draw.chord([cx - r * 1.08, y(0.075) - r * 1.1, cx + r * 1.08, y(0.075) + r * 0.9], 180, 360, fill=col["hair"])
    if person.hat:
        fig.box(cx - r * 1.5, y(0.02), cx + r * 1.5, y(0.035), col["hat"])
        fig.box(cx - r * 0.95, y(-0.03), cx + r * 0.95, y(0.03), col["hat"])


def person_colours(person: Person, rng: np.random.Generator) -> dict:
    """Every colour of the figure, each jittered a little (fabric, light)."""
    pick = {
        "skin": SKIN_TONES[person.skin],
        "hair": HAIR_COLOURS[person.hair_colour],
        "upper": COLOURS[person.upper_colour],
        "lower": COLOURS[person.lower_colour],
        "shoes": COLOURS[person.shoes],
        "stripe": COLOURS.get(person.stripe_colour or "white"),
        "backpack": COLOURS.get(person.backpack or "black"),
        "handbag": COLOURS.get(person.handbag or "black"),
        "hat": COLOURS.get(person.hat or "black"),
    }
    base = np.asarray(list(pick.values()), dtype=np.int64)
    jittered = np.clip(base + rng.integers(-8, 9, size=base.shape), 0, 255).tolist()
    return {key: tuple(value) for key, value in zip(pick, jittered)}


def _camera(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Lighting, blur, noise and flip."""
    height = image.height
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.55) * height / 64))
    array = np.asarray(image, dtype=np.float32)
    mean = float(array.mean())
    contrast = rng.uniform(0.85, 1.12)
    gain = (rng.uniform(0.82, 1.15) * rng.uniform(0.94, 1.06, size=3)).astype(np.float32)
    noise = rng.standard_normal(array.shape, dtype=np.float32) * np.float32(rng.uniform(0, 6))
    array = ((array - mean) * np.float32(contrast) + np.float32(mean)) * gain + noise
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")
    return ImageOps.mirror(image) if rng.random() < 0.5 else image


def draw_figure(
    image: Image.Image, person: Person, col: dict, cx: float, top: float, fh: float, swing: float, stride: float
) -> None:
    """Draw ``person`` onto ``image`` (RGB, or RGBA with a transparent canvas for a sprite).

    Args:
        col: the figure's colours (:func:`person_colours`).
        cx, top, fh: horizontal centre, top of the head and figure height, in pixels.
        swing: arm swing in degrees (about -9..9); stride: distance between the ankles in pixels.
    """
    fig = _Figure(ImageDraw.Draw(image), cx, top, fh)
    if person.backpack:
        side = fig.cx + fig.w(0.1)
        fig.box(side, fig.y(0.19), side + fig.w(0.1), fig.y(0.46), col["backpack"])
    _legs(fig, person, col, stride)
    _torso(fig, person, col)
    if person.backpack:
        for dx in (-0.08, 0.08):
            fig.draw.line(
                [(fig.cx + fig.w(dx), fig.y(0.16)), (fig.cx + fig.w(dx), fig.y(0.34))],
                fill=col["backpack"],
                width=max(1, int(fig.w(0.025))),
            )
    _arms(fig, person, col, swing)
    _head(fig, person, col)


def render_person(person: Person, size: Tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """One RGB image of ``person`` at ``size`` = (height, width), nuisances drawn from ``rng``."""
    height, width = size
    image = _background(height, width, rng)
    fh = height * rng.uniform(0.8, 0.93)
    foot = height * (1 - rng.uniform(0.02, 0.06))
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    col = person_colours(person, rng)
    swing, stride = rng.uniform(-9, 9), rng.uniform(0, 0.14) * fh
    draw_figure(image, person, col, cx, foot - fh, fh, swing, stride)
    return _camera(image, rng)
