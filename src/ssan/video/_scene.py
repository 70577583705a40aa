"""The synthetic street scene: a textured background and pedestrians walking across it.

The pedestrians are the synthetic identities of ``ssan synth`` (same attributes, same
drawing code, colour-swapped twins included), drawn as sprites whose arms and legs swing
with the distance walked. A walker enters from one side outside the frame, crosses it at
its own speed and depth (smaller when farther, drifting slightly up or down) and leaves
on the other side; walkers are drawn far to near, so nearer ones occlude the others.

Boxes follow the framing of the synthetic crops: the figure fills 87% of the box height,
the box is half as wide as it is tall and its bottom edge lies just below the feet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

from ssan.data._synth_draw import draw_figure, person_colours
from ssan.data._synth_people import Person

GROUND = (0.62, 0.96)  # feet y range, fractions of the frame height (far .. near)
FIGURE = (0.2, 0.5)  # figure height at the far and the near end of GROUND, fractions of the frame height
FILL = 0.87  # figure height / box height
FOOT_MARGIN = 0.04  # box bottom below the feet, fraction of the box height
SPEED = (0.55, 1.2)  # walking speed in figure heights per second
NOISE_FIELDS = 6  # pre-drawn sensor-noise fields, cycled over the frames


@dataclass(frozen=True)
class Walker:
    """One pedestrian's walk: who, when, where, how fast (positions in pixels, times in seconds)."""

    track: int  # ground-truth id (1-based)
    person: Person
    colours: dict  # the figure's colours (fixed for the whole walk)
    enter: float  # time at which its box touches the frame edge from outside
    duration: float  # time taken to cross from outside one edge to outside the other
    direction: int  # +1 walks to the right, -1 to the left
    foot: Tuple[float, float]  # feet y (fractions of the frame height) at the start and at the end

    def state(self, t: float, height: int, width: int) -> Optional[dict]:
        """Where the walker is at time ``t``: box (x, y, w, h floats), figure geometry and pose; None off-screen."""
        progress = (t - self.enter) / self.duration
        if not 0.0 <= progress <= 1.0:
            return None
        foot = height * (self.foot[0] + (self.foot[1] - self.foot[0]) * progress)
        fh = height * figure_height(foot / height)
        box_h = fh / FILL
        box_w = box_h / 2
        span = width + height * figure_height(max(self.foot)) / FILL / 2
        cx = -span / 2 + span * progress + width / 2
        cx = cx if self.direction > 0 else width - cx
        walked = span * progress / fh
        phase = 2 * math.pi * walked / 0.8
        return {
            "box": (cx - box_w / 2, foot + FOOT_MARGIN * box_h - box_h, box_w, box_h),
            "fh": fh,
            "swing": 9.0 * math.sin(phase),
            "stride": 0.14 * fh * abs(math.sin(phase)),
        }


def figure_height(foot: float) -> float:
    """Figure height (fraction of the frame height) of a walker whose feet are at ``foot`` (fraction)."""
    share = (foot - GROUND[0]) / (GROUND[1] - GROUND[0])
    return FIGURE[0] + (FIGURE[1] - FIGURE[0]) * share


def plan_walkers(
    people: List[Person], seconds: float, height: int, width: int, rng: np.random.Generator
) -> List[Walker]:
    """A walk for each person, each wholly inside ``seconds`` (faster walkers when the video is short)."""
    walkers = []
    for track, person in enumerate(people, start=1):
        start = rng.uniform(*GROUND)
        end = float(np.clip(start + rng.uniform(-0.08, 0.08), *GROUND))
        fh = height * figure_height((start + end) / 2)
        span = width + height * figure_height(max(start, end)) / FILL / 2
        duration = min(span / (fh * rng.uniform(*SPEED)), 0.95 * seconds)
        enter = rng.uniform(0, seconds - duration)
        walkers.append(
            Walker(
                track,
                person,
                person_colours(person, rng),
                float(enter),
                float(duration),
                1 if rng.random() < 0.5 else -1,
                (float(start), end),
            )
        )
    return walkers


def street_background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 uint8: sky, a row of facades with windows, a paved sidewalk with joints, texture."""
    skyline = int(height * rng.uniform(0.08, 0.18))
    kerb = int(height * GROUND[0]) - int(height * 0.04)
    array = np.broadcast_to(rng.uniform(150, 215, size=3), (height, width, 3)).astype(np.float32)  # sky
    x = 0
    while x < width:  # facades of varied width and colour, with a grid of windows
        w = int(rng.uniform(0.12, 0.3) * width)
        top = skyline + int(rng.uniform(-0.06, 0.05) * height)
        array[max(0, top) : kerb, x : x + w] = rng.uniform(70, 190) * 0.6 + rng.uniform(40, 200, size=3) * 0.4
        window = rng.uniform(30, 110, size=3)
        step_x, step_y = max(6, w // int(rng.integers(3, 6))), max(6, int(height * rng.uniform(0.07, 0.1)))
        for wy in range(max(0, top) + step_y // 2, kerb - step_y // 2, step_y):
            for wx in range(x + step_x // 3, x + w - step_x // 2, step_x):
                array[wy : wy + step_y // 2, wx : wx + step_x // 2] = window
        x += w
    array[kerb:] = rng.uniform(95, 165) + rng.uniform(-12, 12, size=3)
    rows = np.arange(kerb, height)
    joints = rows[(rows - kerb) % max(4, int(height * 0.07)) == 0]
    array[joints] *= 0.8
    for jx in range(int(rng.integers(0, 40)), width, max(8, int(width * 0.09))):
        array[kerb:, jx : jx + 1] *= 0.82
    array += rng.normal(0, 6, size=array.shape).astype(np.float32)
    return np.clip(array, 0, 255).astype(np.uint8)


def _sprite(walker: Walker, state: dict) -> Tuple[Image.Image, int, int]:
    """(RGBA sprite, left, top): the figure drawn on a transparent canvas at its pixel position."""
    x, y, w, h = state["box"]
    left, top = int(math.floor(x)), int(math.floor(y))
    canvas = Image.new("RGBA", (int(math.ceil(x + w)) - left + 1, int(math.ceil(y + h)) - top + 1), (0, 0, 0, 0))
    fh = state["fh"]
    feet = y + h - FOOT_MARGIN * h
    cx = x + w / 2 - left if walker.direction > 0 else left + canvas.width - (x + w / 2)
    draw_figure(canvas, walker.person, walker.colours, cx, feet - fh - top, fh, state["swing"], state["stride"])
    return (canvas if walker.direction > 0 else ImageOps.mirror(canvas)), left, top


class SceneRenderer:
    """Draws the frames of a scene and reports each visible walker's box and visibility.

    Args:
        walkers: the walks (:func:`plan_walkers`).
        height, width: frame size in pixels.
        rng: draws the background and the sensor noise.
    """

    def __init__(self, walkers: List[Walker], height: int, width: int, rng: np.random.Generator):
        self.walkers, self.height, self.width = walkers, height, width
        self.background = Image.fromarray(street_background(height, width, rng))
        self.noise = [rng.normal(0, 3, size=(height, width, 3)).astype(np.int16) for _ in range(NOISE_FIELDS)]

    def render(self, t: float, index: int) -> Tuple[np.ndarray, List[dict]]:
        """Frame at time ``t`` (H x W x 3 uint8) and ``[{"track", "box": (x, y, w, h) ints, "visibility"}]``.

        Boxes are clipped to the frame; walkers whose box is wholly outside are not listed.
        ``visibility`` is the share of the figure's pixels that are in the frame and not hidden.
        """
        frame = self.background.copy()
        labels = np.zeros((self.height, self.width), dtype=np.int32)
        drawn = []
        visible = [(w, s) for w in self.walkers if (s := w.state(t, self.height, self.width)) is not None]
        for walker, state in sorted(visible, key=lambda item: item[1]["box"][1] + item[1]["box"][3]):
            sprite, left, top = _sprite(walker, state)
            frame.paste(sprite, (left, top), sprite)
            mask = np.asarray(sprite)[:, :, 3] > 0
            area = int(mask.sum())
            y0, y1 = max(0, top), min(self.height, top + mask.shape[0])
            x0, x1 = max(0, left), min(self.width, left + mask.shape[1])
            if area == 0 or y1 <= y0 or x1 <= x0:
                continue
            labels[y0:y1, x0:x1][mask[y0 - top : y1 - top, x0 - left : x1 - left]] = walker.track
            drawn.append((walker, state, area))
        people = []
        for walker, state, area in drawn:
            box = _clip_box(state["box"], self.height, self.width)
            if box is not None:
                share = float((labels == walker.track).sum()) / area
                people.append({"track": walker.track, "box": box, "visibility": round(share, 3)})
        pixels = np.asarray(frame, dtype=np.int16) + self.noise[index % NOISE_FIELDS]
        return np.clip(pixels, 0, 255).astype(np.uint8), sorted(people, key=lambda p: p["track"])


def _clip_box(box: Tuple[float, float, float, float], height: int, width: int):
    """(x, y, w, h) rounded to pixels and clipped to the frame; None when nothing is left."""
    x, y, w, h = box
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1 - x0, y1 - y0
