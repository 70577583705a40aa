"""Attributes of the synthetic pedestrians and the sampling of unique identities."""

from __future__ import annotations

from dataclasses import astuple, dataclass, replace
from typing import List, Optional, Tuple

import numpy as np

# Well separated garment colours (RGB). Names are the caption words.
COLOURS = {
    "black": (30, 30, 32),
    "white": (238, 238, 232),
    "gray": (128, 128, 128),
    "red": (210, 32, 32),
    "orange": (245, 135, 25),
    "yellow": (240, 220, 40),
    "green": (35, 150, 55),
    "blue": (30, 75, 210),
    "purple": (125, 50, 170),
    "pink": (250, 140, 195),
    "brown": (120, 72, 35),
}
HAIR_COLOURS = {"black": (22, 20, 20), "brown": (105, 62, 30), "blonde": (230, 195, 105), "gray": (165, 165, 165)}
SHOE_COLOURS = ("black", "white", "brown", "red", "blue", "gray")
SKIN_TONES = ((240, 200, 170), (215, 165, 125), (175, 120, 85), (120, 80, 55))
UPPER_TYPES = ("t-shirt", "shirt", "jacket", "coat")
LOWER_TYPES = ("trousers", "jeans", "shorts", "skirt")


@dataclass(frozen=True)
class Person:
    """One identity: every visual attribute (``gender`` only steers the words and the sampling)."""

    gender: str  # man | woman
    hair_length: str  # short | long
    hair_colour: str
    skin: int  # index into SKIN_TONES
    upper_type: str
    sleeves: str  # short | long
    upper_colour: str
    pattern: str  # plain | striped
    stripe_colour: Optional[str]
    lower_type: str
    lower_colour: str
    shoes: str
    backpack: Optional[str] = None
    handbag: Optional[str] = None
    hat: Optional[str] = None

    def key(self) -> Tuple:
        """The visual attributes: two identities never share them."""
        return astuple(self)[1:]

    def swapped(self) -> Person:
        """The same person with upper and lower garment colours exchanged."""
        stripe = self.stripe_colour
        if stripe == self.lower_colour:
            stripe = self.upper_colour
        return replace(self, upper_colour=self.lower_colour, lower_colour=self.upper_colour, stripe_colour=stripe)


def _pick(u: float, options, weights=None):
    """The option that the uniform number ``u`` in [0, 1) selects (optionally weighted)."""
    if weights is None:
        return options[min(len(options) - 1, int(u * len(options)))]
    total = 0.0
    for option, weight in zip(options, weights):
        total += weight
        if u < total:
            return option
    return options[-1]


def sample_person(rng: np.random.Generator) -> Person:
    """Draw one random attribute combination (not necessarily unique)."""
    u = iter(rng.random(20).tolist())
    colours = tuple(COLOURS)
    gender = _pick(next(u), ("man", "woman"))
    upper_type = _pick(next(u), UPPER_TYPES)
    lower_types = LOWER_TYPES if gender == "woman" else LOWER_TYPES[:3]
    if upper_type == "coat":  # a coat would hide shorts and skirts
        lower_types = LOWER_TYPES[:2]
    upper_colour = _pick(next(u), colours)
    lower_colour = _pick(next(u), [c for c in colours if c != upper_colour])
    pattern = "striped" if upper_type in ("t-shirt", "shirt") and next(u) < 0.25 else "plain"
    stripe = None
    if pattern == "striped":
        stripe = _pick(next(u), [c for c in ("white", "black", "gray", "red", "blue") if c != upper_colour])

    def accessory(p: float) -> Optional[str]:
        return _pick(next(u), colours) if next(u) < p else None

    return Person(
        gender=gender,
        hair_length="long" if next(u) < (0.75 if gender == "woman" else 0.12) else "short",
        hair_colour=_pick(next(u), tuple(HAIR_COLOURS), (0.45, 0.3, 0.15, 0.1)),
        skin=_pick(next(u), range(len(SKIN_TONES))),
        upper_type=upper_type,
        sleeves="long" if upper_type in ("jacket", "coat") or next(u) < 0.4 else "short",
        upper_colour=upper_colour,
        pattern=pattern,
        stripe_colour=stripe,
        lower_type=_pick(next(u), lower_types),
        lower_colour=lower_colour,
        shoes=_pick(next(u), SHOE_COLOURS),
        backpack=accessory(0.25),
        handbag=accessory(0.15) if gender == "woman" else None,
        hat=accessory(0.12),
    )


def sample_identities(count: int, rng: np.random.Generator, swap_fraction: float = 0.25) -> List[List[Person]]:
    """``count`` unique identities, grouped: a group is one person or a colour-swapped pair.

    Pairs differ only by exchanging the upper and lower garment colours, so matching them needs
    colours bound to body parts. Main garment combinations (type and colour of upper and lower
    garments) are kept unique while possible, so the small details are rarely the only clue.
    """
    groups: List[List[Person]] = []
    seen_keys, seen_main = set(), set()
    total, misses = 0, 0
    while total < count:
        person = sample_person(rng)
        main = (person.upper_type, person.upper_colour, person.lower_type, person.lower_colour)
        strict = misses < 100  # main combinations nearly used up: only full keys stay unique
        if person.key() in seen_keys or (strict and main in seen_main):
            misses += 1
            continue
        misses = 0 if strict else misses
        group = [person]
        partner = person.swapped()
        partner_main = (partner.upper_type, partner.upper_colour, partner.lower_type, partner.lower_colour)
        if (
            total + 2 <= count
            and rng.random() < swap_fraction
            and partner.key() not in seen_keys
            and not (strict and partner_main in seen_main)
        ):
            group.append(partner)
        for member in group:
            seen_keys.add(member.key())
            seen_main.add((member.upper_type, member.upper_colour, member.lower_type, member.lower_colour))
        groups.append(group)
        total += len(group)
    return groups
