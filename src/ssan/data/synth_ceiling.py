"""The ceiling of text -> image retrieval on a synthetic set: the best figures its captions allow.

Captions leave hair, shoes, accessories, sleeves and stripes unsaid at random, so a caption
can fit several identities. An *oracle* that knows every image's true attributes (the
generator's ``ssan-synth-truth.json``) scores each gallery image, for each caption, by the
facts the caption states that the image satisfies, and the project's metric ranks it
(:func:`ssan.evaluation.metrics.rank_metrics`: ties go to the earlier gallery item).

What the caption states (``_synth_text.caption_with_facts``) is every attribute its words fix,
with what the wording implies: a gendered subject or pronoun fixes the gender, stripes fix the
pattern and stripe colour, and "his shirt is red" fixes a plain shirt (the grammar never words
a striped garment so). Colours are bound to their garment (a "red shirt" is contradicted by a
blue shirt with red trousers), so colour-swapped twins never fit the same caption. A fact is
either satisfied or contradicted by an image, so the score is also minus the contradictions.

Two rules:

- ``"facts"`` (the issue's oracle): score = facts satisfied. The caption's identity satisfies
  all of them, so its images rank within the block of images that contradict nothing (the
  *consistent* images), in gallery order; the figures depend only on which consistent
  identities come before it. It is the ceiling of readers that use nothing but whether an
  image contradicts the caption: every consistent identity may have written it, and this
  rule orders them by gallery order, blindly.
- ``"likelihood"``: consistent images ordered by how likely their person is to have produced
  the caption's wording (the grammar's only person-dependent probabilities: a backpack,
  handbag or hat the person has is mentioned with probability 0.85, so a caption that
  mentions none favours the people without; stripes with probability 0.9). With identities
  equally likely a priori this is the posterior, and ranking by it maximises the *expected*
  R1 of any reader of the caption (prepare drops unknown words and truncates, so models read
  at most as much): the Bayes ceiling. It can exceed the ``facts`` figure (test split of
  ``bench_ceiling.py --ids 4000``: R1 99.82 against 99.50).

Both are measured on one split: there a model's order among equally likely candidates can beat
the tie rule by luck, so they bound expected figures, not every draw. The generator keeps each
identity's main garments (type and colour, upper and lower) unique while its 1,540
combinations last, and every caption states them, so at the demo's 1,100 identities every
caption fits exactly one identity and both ceilings are 100 (``benchmarks/bench_ceiling.py``).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np

from ssan.data._io import read_json
from ssan.data._synth_text import FACT_FIELDS, P_ACCESSORY_STATED, P_STRIPES_STATED, P_UPPER_NP
from ssan.data.synth import TRUTH
from ssan.errors import DataError

log = logging.getLogger(__name__)

RULES = ("facts", "likelihood")
ACCESSORIES = ("backpack", "handbag", "hat")
_FACT_WEIGHT = 100.0  # one fact outweighs any likelihood factor (the smallest sum is about -8)
_ROWS = 256  # queries scored at a time (memory: rows x gallery x fields booleans)


def load_truth(synth_dir: Union[str, os.PathLike]) -> dict:
    """The ground truth of a synthetic set (its folder, or the truth file itself)."""
    path = Path(synth_dir)
    path = path / TRUTH if path.is_dir() else path
    if not path.is_file():
        raise DataError(
            f"{path} is missing: the set was generated before the generator wrote its ground "
            "truth; generate it again with `ssan synth`"
        )
    truth = read_json(path)
    if not isinstance(truth, dict) or truth.get("generator") != "ssan-synth" or truth.get("version") != 1:
        raise DataError(f"{path} is not an ssan-synth ground-truth file (version 1)")
    return truth


def _records(prepared, split: str) -> List[dict]:
    """Prepared records of ``split`` from a prepared folder, a PreparedDataset or a record list."""
    if isinstance(prepared, (str, os.PathLike)):
        from ssan.data.prepared import load_prepared

        return load_prepared(prepared).records(split)
    if hasattr(prepared, "records"):
        return prepared.records(split)
    return list(prepared)


def _caption_entries(record: dict, image: dict) -> List[dict]:
    """The truth entry of each of ``record``'s captions (prepare keeps them in order, drops some)."""
    entries, start = [], 0
    texts = [entry["text"].strip() for entry in image["captions"]]
    for text in record["captions"]:
        try:
            start = texts.index(text.strip(), start) + 1
        except ValueError:
            raise DataError(
                f"caption {text[:60]!r} of image {record['image']} is not in the ground truth: "
                "the prepared set was not made from this synthetic set"
            ) from None
        entries.append(image["captions"][start - 1])
    return entries


def oracle_inputs(truth: dict, records: Sequence[dict]) -> Tuple[List[dict], List[dict], np.ndarray, np.ndarray]:
    """(gallery attributes, query caption entries, query ids, gallery ids) in evaluation order.

    Every record's image is a gallery item and every caption of every record a query, in
    record order (what :func:`ssan.evaluation.evaluate` scores on a prepared split).
    """
    people = {entry["id"]: entry["attributes"] for entry in truth["identities"]}
    images = {entry["image"]: entry for entry in truth["images"]}
    gallery, queries, query_ids = [], [], []
    for record in records:
        image = images.get(record["image"])
        if image is None or image["id"] != record["id"]:
            raise DataError(
                f"image {record['image']} (id {record['id']}) is not in the ground truth with that "
                "id: the prepared set was not made from this synthetic set"
            )
        gallery.append(people[image["id"]])
        for entry in _caption_entries(record, image):
            queries.append(entry)
            query_ids.append(record["id"])
    if not gallery or not queries:
        raise DataError("no gallery image or no query caption to score")
    return gallery, queries, np.asarray(query_ids, np.int64), np.asarray([r["id"] for r in records], np.int64)


def _codes(gallery: Sequence[dict], queries: Sequence[dict]) -> Tuple[np.ndarray, np.ndarray]:
    """Gallery attributes (G x F) and stated facts (Q x F) as integer codes; -1: not stated."""
    names: Dict[Tuple[str, object], int] = {}

    def code(field: str, value) -> int:
        return names.setdefault((field, value), len(names))

    attributes = np.array([[code(f, person.get(f)) for f in FACT_FIELDS] for person in gallery], np.int64)
    stated = np.array(
        [[code(f, q["facts"][f]) if f in q["facts"] else -1 for f in FACT_FIELDS] for q in queries], np.int64
    )
    return attributes, stated


def _log_likelihood(gallery: Sequence[dict], queries: Sequence[dict]) -> np.ndarray:
    """Q x G log-probability factors of the caption's person-dependent wording, per gallery person."""
    has = {name: np.array([person.get(name) is not None for person in gallery]) for name in ACCESSORIES}
    striped = np.array([person.get("pattern") == "striped" for person in gallery])
    out = np.zeros((len(queries), len(gallery)))
    omitted = math.log(1.0 - P_ACCESSORY_STATED)
    for row, query in enumerate(queries):
        for name in ACCESSORIES:
            if name not in query["facts"]:
                out[row, has[name]] += omitted
        form = None if "pattern" in query["facts"] else query.get("upper_np")
        if form is not None:
            plain = 1.0 if form == "forced" else P_UPPER_NP
            out[row] += np.where(striped, math.log(1.0 - P_STRIPES_STATED), math.log(plain))
    return out


def oracle_similarity(gallery: Sequence[dict], queries: Sequence[dict], rule: str = "facts") -> np.ndarray:
    """Q x G oracle scores (float64) of ``rule`` (see the module docstring); higher is better."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; valid: {', '.join(RULES)}")
    attributes, stated = _codes(gallery, queries)
    scores = np.empty((len(queries), len(gallery)))
    for start in range(0, len(queries), _ROWS):
        block = stated[start : start + _ROWS, None, :]
        scores[start : start + _ROWS] = ((block == attributes[None]) & (block >= 0)).sum(-1)
    if rule == "likelihood":
        scores = scores * _FACT_WEIGHT + _log_likelihood(gallery, queries)
    return scores


def consistent_identities(gallery: Sequence[dict], queries: Sequence[dict], gallery_ids) -> np.ndarray:
    """(Q,) number of gallery identities that contradict none of each caption's facts (1: unambiguous)."""
    stated = np.array([len(query["facts"]) for query in queries])
    consistent = oracle_similarity(gallery, queries) == stated[:, None]
    ids = np.asarray(gallery_ids)
    return np.array([len(np.unique(ids[row])) for row in consistent], np.int64)


def caption_ceiling(
    synth_dir: Union[str, os.PathLike],
    prepared,
    split: str = "test",
    rule: str = "facts",
    ks: Sequence[int] = (1, 5, 10),
) -> Dict[str, float]:
    """The oracle's text -> image figures on a prepared split of a synthetic set.

    Args:
        synth_dir: the synthetic set's folder (holding ``ssan-synth-truth.json``) or that file.
        prepared: the prepared folder made from it, a ``PreparedDataset``, or a split's records.
        split: the prepared split to score (ignored when records are given).
        rule: ``"facts"`` (facts satisfied, ties by gallery order) or ``"likelihood"``.
        ks: Rank-k cut-offs.

    Returns:
        ``{"R1", "R5", "R10", "mAP", "mINP"}`` in percent, over the queries and gallery that
        :func:`ssan.evaluation.evaluate` scores on that split, in the same order.
    """
    from ssan.evaluation.metrics import rank_metrics

    gallery, queries, query_ids, gallery_ids = oracle_inputs(load_truth(synth_dir), _records(prepared, split))
    scores = oracle_similarity(gallery, queries, rule)
    figures = rank_metrics(scores, query_ids, gallery_ids, ks=ks)
    log.debug("ceiling (%s) of %d captions x %d images: %s", rule, len(queries), len(gallery), figures)
    return figures
