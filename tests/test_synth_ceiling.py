"""The ceiling of the synthetic set: captions' facts in the ground truth, and the oracle's figures."""

import hashlib
import json
import re
from dataclasses import asdict, replace

import numpy as np
import pytest

from ssan.data import generate_synthetic, prepare_dataset
from ssan.data._synth_people import Person, sample_identities
from ssan.data._synth_text import COLOUR_WORDS, SHOE_NOUNS, SUBJECTS, caption, caption_with_facts
from ssan.data.formats import DATASET_FORMATS
from ssan.data.prepared import load_prepared
from ssan.data.synth import MANIFEST, TRUTH
from ssan.data.synth_ceiling import caption_ceiling, load_truth, oracle_inputs, oracle_similarity
from ssan.errors import DataError
from ssan.evaluation.metrics import rank_metrics

A = Person(
    gender="man",
    hair_length="short",
    hair_colour="black",
    skin=0,
    upper_type="shirt",
    sleeves="short",
    upper_colour="red",
    pattern="plain",
    stripe_colour=None,
    lower_type="jeans",
    lower_colour="blue",
    shoes="black",
    backpack="green",
)
B = replace(A, backpack=None)  # A without the backpack
C = replace(A, upper_type="coat", sleeves="long", upper_colour="green", lower_type="trousers", lower_colour="black")
D = A.swapped()  # blue shirt, red jeans: A's colour-swapped twin
MAIN = {"upper_type": "shirt", "upper_colour": "red", "lower_type": "jeans", "lower_colour": "blue"}


def _toy():
    """Gallery D1 A1 A2 B1 C1; one caption per image, the dropped-by-prepare one excepted."""
    said = {"text": "red shirt, blue jeans.", "facts": MAIN, "upper_np": "forced"}
    images = [
        (
            "d1.png",
            4,
            D,
            [
                {
                    "text": "blue shirt, red jeans.",
                    "facts": {**MAIN, "upper_colour": "blue", "lower_colour": "red"},
                    "upper_np": "forced",
                }
            ],
        ),
        ("a1.png", 1, A, [said]),
        (
            "a2.png",
            1,
            A,
            [{"text": "red shirt, green backpack.", "facts": {**MAIN, "backpack": "green"}, "upper_np": "forced"}],
        ),
        (
            "b1.png",
            2,
            B,
            [{"text": "xyzzy.", "facts": {}, "upper_np": None}, {**said, "text": " red shirt, blue jeans."}],
        ),
        (
            "c1.png",
            3,
            C,
            [
                {
                    "text": "green coat.",
                    "facts": {
                        "upper_type": "coat",
                        "upper_colour": "green",
                        "lower_type": "trousers",
                        "lower_colour": "black",
                    },
                    "upper_np": "forced",
                }
            ],
        ),
    ]
    people = {identity: person for _, identity, person, _ in images}
    truth = {
        "generator": "ssan-synth",
        "version": 1,
        "identities": [{"id": i, "split": "test", "twin": None, "attributes": asdict(p)} for i, p in people.items()],
        "images": [{"image": path, "id": i, "captions": caps} for path, i, _, caps in images],
    }
    records = [
        {
            "image": path,
            "id": i,
            "label": None,
            "captions": [c["text"] for c in caps if c["text"] != "xyzzy."],
            "tokens": [[5]],
        }
        for path, i, _, caps in images
    ]
    return truth, records


def test_toy_ceiling_is_known(tmp_path):
    truth, records = _toy()
    (tmp_path / TRUTH).write_text(json.dumps(truth))
    # facts: A's captions rank A first; B's caption ties with A1, A2 before it (rank 3); D and C unique
    facts = caption_ceiling(tmp_path, records)
    assert facts["R1"] == pytest.approx(80.0) and facts["R5"] == 100.0
    assert facts["mAP"] == pytest.approx(100 * (4 + 1 / 3) / 5) and facts["mINP"] == pytest.approx(facts["mAP"])
    # likelihood: a caption without a backpack favours B (no backpack) over A (backpack unsaid: 0.15)
    likely = caption_ceiling(tmp_path / TRUTH, records, rule="likelihood")
    assert likely["R1"] == pytest.approx(80.0)
    assert likely["mAP"] == pytest.approx(100 * (4 + (1 / 2 + 2 / 3) / 2) / 5)
    assert likely["mINP"] == pytest.approx(100 * (4 + 2 / 3) / 5)
    with pytest.raises(ValueError, match="unknown rule"):
        caption_ceiling(tmp_path, records, rule="magic")


def test_toy_scores_count_satisfied_facts_with_colours_bound_to_garments():
    truth, records = _toy()
    gallery, queries, query_ids, gallery_ids = oracle_inputs(truth, records)
    assert query_ids.tolist() == [4, 1, 1, 2, 3] and gallery_ids.tolist() == [4, 1, 1, 2, 3]
    scores = oracle_similarity(gallery, queries)
    assert scores[1].tolist() == [2, 4, 4, 4, 0]  # the twin D has red and blue, on the other garments
    assert scores[2].tolist() == [3, 5, 5, 4, 1]  # D and C carry the same green backpack


def test_ground_truth_is_checked_against_the_prepared_records(tmp_path):
    truth, records = _toy()
    with pytest.raises(DataError, match="missing"):
        load_truth(tmp_path)
    (tmp_path / TRUTH).write_text(json.dumps(truth))
    with pytest.raises(DataError, match="not in the ground truth"):
        caption_ceiling(tmp_path, [{**records[0], "captions": ["another caption."]}])
    with pytest.raises(DataError, match="not in the ground truth"):
        caption_ceiling(tmp_path, [{**records[0], "id": 9}])


def test_caption_with_facts_keeps_the_text_and_the_draws():
    people = [p for group in sample_identities(40, np.random.default_rng(1)) for p in group]
    for index, person in enumerate(people):
        rng_a, rng_b = np.random.default_rng([7, index]), np.random.default_rng([7, index])
        text, stated = caption_with_facts(person, rng_a, tight=index % 2 == 0)
        assert text == caption(person, rng_b, tight=index % 2 == 0)
        assert rng_a.random() == rng_b.random()
        assert all(getattr(person, field) == value for field, value in stated["facts"].items())


# sha256 of the annotation files for ids=12, size 32x16, seed 5 (the generator before the truth file)
ANNOTATION_SHA256 = {
    "cuhk-pedes": "e90ef21e879e72f66ddcfe08c13c35fbefa04cc4ec194834335fa5dfdd606d84",
    "icfg-pedes": "af3e154edcd0935654a1112f7416fd3694881eb6bcd41f6f82a4e5496819c56f",
    "rstpreid": "c3ae5057effe90615b9615a58556c82208cc1eb208e5e127899af8273d96827f",
}


@pytest.mark.parametrize("fmt", DATASET_FORMATS.names())
def test_annotation_bytes_unchanged_and_truth_listed(tmp_path, fmt):
    manifest = generate_synthetic(tmp_path / fmt, ids=12, size=(32, 16), seed=5, fmt=fmt)
    annotation = (tmp_path / fmt / DATASET_FORMATS.get(fmt).files[0]).read_bytes()
    assert hashlib.sha256(annotation).hexdigest() == ANNOTATION_SHA256[fmt]
    assert manifest["truth"] == TRUTH
    assert json.loads((tmp_path / fmt / MANIFEST).read_text())["truth"] == TRUTH
    truth = load_truth(tmp_path / fmt)
    raw = json.loads(annotation)
    assert [image["image"] for image in truth["images"]] == [r.get("file_path", r.get("img_path")) for r in raw]
    assert [[c["text"] for c in image["captions"]] for image in truth["images"]] == [r["captions"] for r in raw]


def _has(text: str, words) -> bool:
    return any(re.search(rf"\b{re.escape(w)}\b", text) for w in words)


def test_truth_facts_agree_with_the_words(tmp_path):
    generate_synthetic(tmp_path / "s", ids=30, size=(32, 16), seed=2)
    truth = load_truth(tmp_path / "s")
    people = {entry["id"]: entry["attributes"] for entry in truth["identities"]}
    twins = [(e["id"], e["twin"]) for e in truth["identities"] if e["twin"] is not None]
    assert twins and all(people[a]["upper_colour"] == people[b]["lower_colour"] for a, b in twins)
    for image in truth["images"]:
        for entry in image["captions"]:
            text, facts = entry["text"].lower(), entry["facts"]
            assert all(people[image["id"]][field] == value for field, value in facts.items())
            for field in ("upper_colour", "lower_colour", "shoes", "hair_colour", "backpack", "hat", "stripe_colour"):
                if field in facts:
                    assert _has(text, COLOUR_WORDS.get(facts[field], (facts[field],))), (field, text)
            assert _has(text, ["hair"]) == ("hair_colour" in facts), text
            assert _has(text, SHOE_NOUNS) == ("shoes" in facts), text
            assert _has(text, ["stripes", "striped"]) == (facts.get("pattern") == "striped"), text
            assert ("sleeve" in text) == ("sleeves" in facts), text
            assert _has(text, ["he", "his", *SUBJECTS["man"]]) == (facts.get("gender") == "man"), text
            assert _has(text, ["she", "her", *SUBJECTS["woman"]]) == (facts.get("gender") == "woman"), text


def test_ceiling_of_a_tiny_set_is_the_metric_of_the_oracle_scores(tmp_path):
    generate_synthetic(tmp_path / "s", ids=40, images_per_id=2, size=(32, 16), seed=4)
    prepare_dataset("cuhk-pedes", tmp_path / "s", tmp_path / "p")
    prepared = load_prepared(tmp_path / "p")
    for split in ("test", "val"):
        records = prepared.records(split)
        gallery, queries, query_ids, gallery_ids = oracle_inputs(load_truth(tmp_path / "s"), records)
        assert query_ids.tolist() == [r["id"] for r in records for _ in r["tokens"]]  # evaluation's order
        assert len(gallery) == len(records) and len(queries) == prepared.summary["splits"][split]["captions"]
        for rule in ("facts", "likelihood"):
            figures = caption_ceiling(tmp_path / "s", tmp_path / "p", split, rule=rule)
            assert figures == rank_metrics(oracle_similarity(gallery, queries, rule), query_ids, gallery_ids)
            assert all(0.0 <= figures[key] <= 100.0 for key in ("R1", "R5", "R10", "mAP", "mINP"))
            assert figures["R1"] <= figures["R5"] <= figures["R10"]
    assert caption_ceiling(tmp_path / "s", prepared.records("test")) == caption_ceiling(tmp_path / "s", prepared)
