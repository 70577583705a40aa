"""Caption grammar of the synthetic pedestrians.

A caption is built from *facts* (hair, upper garment, lower garment, shoes, accessories), each
rendered either as a noun phrase ("a red short-sleeved shirt") inside a clothing list or as a
clause of its own ("His jeans are blue."). Subjects, verbs and nouns have synonyms; the order of
the facts, the composition style and omissions (hair, shoes, accessories, details) vary, so two
captions of one image rarely agree. Garment colours are always stated and always bound to their
garment by the words.

:func:`caption_with_facts` also returns the *facts* a caption states, as ``{Person field: value}``
(see :data:`FACT_FIELDS`), including what the wording implies: a gendered subject or pronoun
states ``gender``; a clause "his shirt is red" is only ever written for a plain garment, so it
states ``pattern: plain``; stripes state ``pattern: striped`` and ``stripe_colour``. It records,
in ``upper_np``, how the upper garment was worded when its stripes could have been left unsaid
(see :func:`caption_with_facts`). Recording changes no draw of the random generator and no word.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ssan.data._synth_people import Person

SUBJECTS = {
    "man": ("man", "guy", "gentleman", "young man", "male", "boy"),
    "woman": ("woman", "lady", "girl", "young woman", "female"),
    None: ("person", "pedestrian", "individual"),
}
PRONOUNS = {"man": ("he", "his"), "woman": ("she", "her"), None: ("the person", "their")}
WEAR = ("is wearing", "wears", "is dressed in", "has on", "is in", "is clad in", "is sporting")
UPPER_NOUNS = {
    "t-shirt": ("t-shirt", "tee", "tee shirt", "t shirt"),
    "shirt": ("shirt", "button up shirt", "collared shirt"),
    "jacket": ("jacket", "zip up jacket", "windbreaker"),
    "coat": ("coat", "long coat", "overcoat"),
}
LOWER_NOUNS = {  # (noun, plural?)
    "trousers": (("trousers", True), ("pants", True), ("slacks", True), ("pair of trousers", False)),
    "jeans": (("jeans", True), ("denim jeans", True), ("pair of jeans", False)),
    "shorts": (("shorts", True), ("pair of shorts", False), ("short pants", True)),
    "skirt": (("skirt", False), ("short skirt", False)),
}
SHOE_NOUNS = ("shoes", "sneakers", "trainers")
COLOUR_WORDS = {"gray": ("gray", "grey"), "blonde": ("blonde", "blond")}
# Probabilities the grammar draws with that depend on the person (see synth_ceiling's likelihood)
P_ACCESSORY_STATED = 0.85  # a backpack, handbag or hat the person has is mentioned
P_STRIPES_STATED = 0.9  # a striped upper garment worded as a noun phrase mentions its stripes
P_UPPER_NP = 0.5  # a later clause words a plain upper garment as "wears a ..." (else "his ... is ...")
FACT_FIELDS = (
    "gender",
    "hair_length",
    "hair_colour",
    "upper_type",
    "sleeves",
    "upper_colour",
    "pattern",
    "stripe_colour",
    "lower_type",
    "lower_colour",
    "shoes",
    "backpack",
    "handbag",
    "hat",
)
ENDINGS = (
    "is walking",
    "walks down the street",
    "appears to be walking",
    "is walking forward",
    "stands on the sidewalk",
)


class _Writer:
    """Renders the facts of one person with one random generator."""

    def __init__(self, person: Person, rng: np.random.Generator):
        self.p, self.rng = person, rng
        self.facts: Dict[str, str] = {}
        self.upper_np_form: Optional[str] = None  # "forced" | "chosen": see caption_with_facts
        gender = person.gender if rng.random() < 0.75 else None
        if gender is not None:
            self.facts["gender"] = gender
        self.subject_noun = self.pick(SUBJECTS[gender])
        self.pron, self.poss = PRONOUNS[gender]

    def pick(self, options):
        return options[int(self.rng.integers(len(options)))]

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def state(self, **facts: str) -> None:
        """Record facts the words being written state."""
        self.facts.update(facts)

    def colour(self, name: str) -> str:
        return self.pick(COLOUR_WORDS.get(name, (name,)))

    @staticmethod
    def article(phrase: str) -> str:
        return ("an " if phrase[0] in "aeiou" else "a ") + phrase

    # --- noun phrases -------------------------------------------------------------------------
    def upper_np(self, form: str = "forced") -> str:
        """The upper garment as a noun phrase; ``form``: "chosen" when a plain garment could have
        been worded as a clause instead (recorded for the stripes' likelihood)."""
        p = self.p
        noun = self.pick(UPPER_NOUNS[p.upper_type])
        self.state(upper_type=p.upper_type, upper_colour=p.upper_colour)
        sleeve = f"{p.sleeves}-sleeved " if p.upper_type in ("t-shirt", "shirt") and self.chance(0.5) else ""
        if sleeve:
            self.state(sleeves=p.sleeves)
        if p.pattern == "striped" and self.chance(P_STRIPES_STATED):
            self.state(pattern="striped", stripe_colour=p.stripe_colour)
            if self.chance(0.5):
                return self.article(
                    f"{self.colour(p.upper_colour)} and {self.colour(p.stripe_colour)} striped {sleeve}{noun}"
                )
            return self.article(
                f"{self.colour(p.upper_colour)} {sleeve}{noun} with {self.colour(p.stripe_colour)} stripes"
            )
        self.upper_np_form = form
        if sleeve and self.chance(0.4):
            return self.article(f"{self.colour(p.upper_colour)} {noun} with {p.sleeves} sleeves")
        return self.article(f"{self.colour(p.upper_colour)} {sleeve}{noun}")

    def lower_np(self) -> Tuple[str, str, bool]:
        """(phrase, noun, plural)."""
        noun, plural = self.pick(LOWER_NOUNS[self.p.lower_type])
        colour = self.colour(self.p.lower_colour)
        self.state(lower_type=self.p.lower_type, lower_colour=self.p.lower_colour)
        if noun.startswith("pair of "):
            return f"a pair of {colour} {noun[8:]}", noun, plural
        phrase = f"{colour} {noun}"
        return (phrase if plural else self.article(phrase)), noun, plural

    def shoes_np(self) -> str:
        self.state(shoes=self.p.shoes)
        return f"{self.colour(self.p.shoes)} {self.pick(SHOE_NOUNS)}"

    def hair_np(self) -> str:
        self.state(hair_length=self.p.hair_length, hair_colour=self.p.hair_colour)
        return f"{self.p.hair_length} {self.colour(self.p.hair_colour)} hair"

    # --- clauses (without the final full stop) ------------------------------------------------
    def upper_clause(self, subject: str, first: bool = False) -> str:
        if first:
            return f"{subject} {self.pick(WEAR)} {self.upper_np()}"
        if self.chance(P_UPPER_NP) or self.p.pattern == "striped":
            return f"{subject} {self.pick(WEAR)} {self.upper_np('chosen')}"
        self.state(upper_type=self.p.upper_type, upper_colour=self.p.upper_colour, pattern="plain")
        return f"{self.poss} {self.pick(UPPER_NOUNS[self.p.upper_type])} is {self.colour(self.p.upper_colour)}"

    def lower_clause(self, subject: str, first: bool = False) -> str:
        phrase, noun, plural = self.lower_np()
        if first or self.chance(0.5):
            return f"{subject} {self.pick(WEAR)} {phrase}"
        noun = noun[8:] if noun.startswith("pair of ") else noun
        verb = "is" if self.p.lower_type == "skirt" else "are"
        self.state(lower_type=self.p.lower_type, lower_colour=self.p.lower_colour)
        return f"{self.poss} {noun} {verb} {self.colour(self.p.lower_colour)}"

    def shoes_clause(self, subject: str, first: bool = False) -> str:
        self.state(shoes=self.p.shoes)
        if not first and self.chance(0.5):
            return f"{self.poss} {self.pick(SHOE_NOUNS)} are {self.colour(self.p.shoes)}"
        return f"{subject} {self.pick(WEAR[:3])} {self.shoes_np()}"

    def hair_clause(self, subject: str) -> str:
        p = self.p
        self.state(hair_length=p.hair_length, hair_colour=p.hair_colour)
        return self.pick(
            (
                f"{subject} has {self.hair_np()}",
                f"{self.poss} hair is {p.hair_length} and {self.colour(p.hair_colour)}",
                f"{self.poss} {self.colour(p.hair_colour)} hair is {p.hair_length}",
            )
        )

    def accessory_clauses(self, subject: str) -> List[str]:
        p, out = self.p, []
        if p.backpack and self.chance(P_ACCESSORY_STATED):
            self.state(backpack=p.backpack)
            out.append(
                self.pick(
                    (
                        f"{subject} is carrying a {self.colour(p.backpack)} backpack",
                        f"{subject} has a {self.colour(p.backpack)} backpack on {self.poss} back",
                        f"{subject} carries a {self.colour(p.backpack)} bag on {self.poss} back",
                    )
                )
            )
        if p.handbag and self.chance(P_ACCESSORY_STATED):
            self.state(handbag=p.handbag)
            out.append(
                self.pick(
                    (
                        f"{subject} is holding a {self.colour(p.handbag)} handbag",
                        f"{subject} carries a {self.colour(p.handbag)} purse in {self.poss} hand",
                    )
                )
            )
        if p.hat and self.chance(P_ACCESSORY_STATED):
            self.state(hat=p.hat)
            out.append(
                self.pick(
                    (
                        f"{subject} wears a {self.colour(p.hat)} hat",
                        f"{subject} has a {self.colour(p.hat)} cap on {self.poss} head",
                    )
                )
            )
        return out


def _join(items: List[str], rng: np.random.Generator) -> str:
    if len(items) == 1:
        return items[0]
    comma = "," if len(items) > 2 and rng.random() < 0.5 else ""
    return ", ".join(items[:-1]) + f"{comma} and {items[-1]}"


def _subject(w: _Writer) -> str:
    return f"{w.pick(('a', 'the', 'this', 'a', 'the'))} {w.subject_noun}"


def _sentences(w: _Writer) -> List[str]:
    """Sentences of one caption, first letter not yet capitalised."""
    subject = _subject(w)
    with_hair = w.chance(0.7)
    with_shoes = w.chance(0.75)
    pieces: List[Tuple[str, Callable[..., str]]] = [("upper", w.upper_clause), ("lower", w.lower_clause)]
    if with_shoes:
        pieces.append(("shoes", w.shoes_clause))
    if w.chance(0.4):
        w.rng.shuffle(pieces)
    style = w.pick(("list", "list", "clauses", "with", "in"))
    sentences: List[str] = []
    if style in ("list", "with", "in"):
        nps = {"upper": w.upper_np, "lower": lambda: w.lower_np()[0], "shoes": w.shoes_np}
        listed = [nps[name]() for name, _ in pieces]
        if style == "in":
            sentences.append(f"{subject} in {_join(listed, w.rng)} {w.pick(ENDINGS)}")
        elif style == "with" and with_hair:
            sentences.append(f"{subject} with {w.hair_np()} {w.pick(WEAR)} {_join(listed, w.rng)}")
            with_hair = False
        else:
            sentences.append(f"{subject} {w.pick(WEAR)} {_join(listed, w.rng)}")
    else:
        for i, (_, clause) in enumerate(pieces):
            sentences.append(clause(subject, True) if i == 0 else clause(w.pron))
    if with_hair:
        sentences.insert(
            int(w.rng.integers(1, len(sentences) + 1)) if style == "clauses" else len(sentences),
            w.hair_clause(w.pron if sentences else subject),
        )
    sentences.extend(w.accessory_clauses(w.pron))
    if w.chance(0.15) and style != "in":
        sentences.append(f"{w.pron} {w.pick(ENDINGS)}")
    return sentences


def caption_with_facts(person: Person, rng: np.random.Generator, tight: bool = False) -> Tuple[str, dict]:
    """One caption of ``person`` and what it states: ``(text, {"facts": {...}, "upper_np": form})``.

    ``facts`` maps :data:`FACT_FIELDS` names to the values the words state (each equals the
    person's attribute). ``upper_np`` says how an upper garment whose pattern the caption does
    not state was worded (None when the pattern is stated): "forced" when a noun phrase was the
    only wording (list styles, first clause), which a striped garment gets with probability
    ``1 - P_STRIPES_STATED`` and a plain one always; "chosen" when a later clause chose the noun
    phrase: ``1 - P_STRIPES_STATED`` (striped) against ``P_UPPER_NP`` (plain). The text and the
    draws from ``rng`` are those of :func:`caption`.
    """
    writer = _Writer(person, rng)
    sentences = [s[0].upper() + s[1:] for s in _sentences(writer)]
    text = ("." if tight else ". ").join(sentences) + "."
    facts = {name: writer.facts[name] for name in FACT_FIELDS if name in writer.facts}
    return text, {"facts": facts, "upper_np": writer.upper_np_form}


def caption(person: Person, rng: np.random.Generator, tight: bool = False) -> str:
    """One caption of ``person``; ``tight`` joins sentences without a space (RSTPReid style)."""
    return caption_with_facts(person, rng, tight)[0]
