"""The synthetic generator: layouts of the three formats, identities, captions, determinism."""

import json
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from ssan.data import generate_synthetic, tokenize
from ssan.data._synth_draw import render_person
from ssan.data._synth_people import COLOURS, sample_identities
from ssan.data._synth_text import caption
from ssan.errors import DataError

SMALL = {"ids": 12, "size": (32, 16)}


def files_of(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed_and_any_worker_count(tmp_path):
    generate_synthetic(tmp_path / "a", seed=5, **SMALL)
    generate_synthetic(tmp_path / "b", seed=5, workers=2, **SMALL)
    generate_synthetic(tmp_path / "c", seed=6, **SMALL)
    a, b, c = files_of(tmp_path / "a"), files_of(tmp_path / "b"), files_of(tmp_path / "c")
    assert a == b
    assert a["reid_raw.json"] != c["reid_raw.json"]


def test_cuhk_layout(tmp_path):
    result = generate_synthetic(tmp_path / "d", ids=20, captions_per_image=(1, 3), size=(64, 32))
    records = json.loads((tmp_path / "d" / "reid_raw.json").read_text())
    assert result["images"] == len(records) == 80
    assert all(list(r) == ["split", "captions", "file_path", "processed_tokens", "id"] for r in records)
    assert {r["id"] for r in records} == set(range(1, 21))
    assert Counter(r["split"] for r in records) == {"train": 64, "val": 8, "test": 8}
    assert {r["file_path"].split("/")[0] for r in records} <= {"CUHK01", "CUHK03", "Market"}
    assert all(1 <= len(r["captions"]) <= 3 for r in records)
    assert len({len(r["captions"]) for r in records}) > 1
    assert all(r["processed_tokens"] == [tokenize(c) for c in r["captions"]] for r in records)
    assert result["captions"] == sum(len(r["captions"]) for r in records)
    for record in records[:5]:
        with Image.open(tmp_path / "d" / "imgs" / record["file_path"]) as image:
            assert image.size == (32, 64) and image.mode == "RGB"


def test_icfg_layout(tmp_path):
    generate_synthetic(tmp_path / "d", fmt="icfg-pedes", ids=30, **{"size": (32, 16)})
    records = json.loads((tmp_path / "d" / "ICFG-PEDES.json").read_text())
    assert {r["split"] for r in records} == {"train", "test"}
    train_ids = sorted({r["id"] for r in records if r["split"] == "train"})
    assert train_ids == list(range(len(train_ids)))  # 0-based, contiguous
    assert min(r["id"] for r in records if r["split"] == "test") == len(train_ids)
    assert all(len(r["captions"]) == 1 for r in records)
    pattern = re.compile(r"(train|test)/(\d{4})/\2_\d{3}_\d{2}_\d{4}(morning|noon|afternoon)_\d{4}_\d\.jpg")
    assert all(pattern.fullmatch(r["file_path"]) for r in records)
    folders = {(r["split"], r["file_path"].split("/")[0]) for r in records}
    assert ("train", "test") in folders or ("test", "train") in folders  # folders are not the split


def test_rstpreid_layout(tmp_path):
    generate_synthetic(tmp_path / "d", fmt="rstpreid", ids=20, size=(32, 16))
    records = json.loads((tmp_path / "d" / "data_captions.json").read_text())
    assert all(list(r) == ["id", "img_path", "captions", "split"] for r in records)
    per_id = Counter(r["id"] for r in records)
    assert set(per_id.values()) == {5} and min(per_id) == 0
    assert all(len(r["captions"]) == 2 for r in records)
    assert {r["split"] for r in records} == {"train", "val", "test"}
    assert any(re.search(r"\.[A-Z]", c) for r in records for c in r["captions"])  # "shirt.His"
    assert all(re.fullmatch(r"\d{4}_c\d+_\d{4}\.jpg", r["img_path"]) for r in records)
    assert (tmp_path / "d" / "imgs" / records[0]["img_path"]).is_file()


def test_identities_unique_with_colour_swapped_pairs():
    groups = sample_identities(300, np.random.default_rng(0))
    people = [p for g in groups for p in g]
    assert len(people) == 300 and len({p.key() for p in people}) == 300
    pairs = [g for g in groups if len(g) == 2]
    assert len(pairs) > 20
    for a, b in pairs:
        assert (a.upper_colour, a.lower_colour) == (b.lower_colour, b.upper_colour)
        assert (a.upper_type, a.lower_type, a.shoes, a.hair_colour) == (
            b.upper_type,
            b.lower_type,
            b.shoes,
            b.hair_colour,
        )
    assert len({p.upper_colour for p in people}) >= 10


def _colour_words(name):
    return {"gray": ("gray", "grey")}.get(name, (name,))


def test_captions_state_garment_colours_and_vary():
    people = [p for g in sample_identities(60, np.random.default_rng(1)) for p in g]
    texts = defaultdict(set)
    for i, person in enumerate(people):
        for k in range(5):
            text = caption(person, np.random.default_rng([i, k]))
            words = set(tokenize(text))
            assert words & set(_colour_words(person.upper_colour)), text
            assert words & set(_colour_words(person.lower_colour)), text
            assert text[0].isupper() and text.endswith(".")
            texts[i].add(text)
    assert np.mean([len(t) for t in texts.values()]) > 4.5  # captions of one person rarely repeat


UPPER_NOUNS = {"shirt", "tee", "jacket", "windbreaker", "coat", "overcoat"}
LOWER_NOUNS = {"trousers", "pants", "slacks", "jeans", "shorts", "skirt"}
MODIFIERS = {"short", "long", "sleeved", "sleeve", "button", "up", "collared", "zip", "t", "tee", "denim"}
COLOUR_TOKENS = set(COLOURS) | {"grey"}


def _bound_colour(tokens, i):
    """Colour word bound to the garment noun at ``i``: "<noun> is/are <colour>" or "<colour> ... <noun>"."""
    if i + 2 < len(tokens) and tokens[i + 1] in ("is", "are") and tokens[i + 2] in COLOUR_TOKENS:
        return tokens[i + 2]
    j = i - 1
    while j >= 0 and tokens[j] in MODIFIERS:
        j -= 1
    return tokens[j] if j >= 0 and tokens[j] in COLOUR_TOKENS else None


def test_colours_are_bound_to_their_garments_by_the_words():
    groups = sample_identities(80, np.random.default_rng(2))
    assert any(len(g) == 2 for g in groups)
    people = [p for g in groups for p in g if p.pattern == "plain"]
    checked = 0
    for i, person in enumerate(people):
        for k in range(4):
            tokens = tokenize(caption(person, np.random.default_rng([9, i, k])))
            for j, token in enumerate(tokens):
                nouns = UPPER_NOUNS if token in UPPER_NOUNS else LOWER_NOUNS if token in LOWER_NOUNS else None
                if nouns is None:
                    continue
                colour = _bound_colour(tokens, j)
                if colour is None:
                    continue
                expected = person.upper_colour if nouns is UPPER_NOUNS else person.lower_colour
                assert colour in _colour_words(expected), (tokens, person)
                checked += 1
    assert checked > 500


@pytest.mark.parametrize("size", [(64, 32), (128, 64), (256, 128)])
def test_render_sizes_and_garment_colours_visible(size):
    person = sample_identities(1, np.random.default_rng(3))[0][0]
    image = render_person(person, size, np.random.default_rng(0))
    assert image.size == (size[1], size[0]) and image.mode == "RGB"
    array = np.asarray(image, dtype=float).reshape(-1, 3)
    for name in (person.upper_colour, person.lower_colour):
        distance = np.abs(array - np.asarray(COLOURS[name])).sum(axis=1)
        assert (distance < 90).mean() > 0.02, name  # a visible share of pixels has the garment colour


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fmt": "market"}, "unknown dataset format 'market'"),
        ({"ids": 0}, "ids and images_per_id"),
        ({"captions_per_image": (2, 1)}, "MIN <= MAX"),
        ({"size": (8, 4)}, "at least 16x8"),
        ({"splits": (0.5, 0.5)}, "three fractions"),
        ({"workers": 0}, "workers must be >= 1"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, message):
    with pytest.raises(DataError, match=message):
        generate_synthetic(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_overwrite_rules(tmp_path):
    generate_synthetic(tmp_path / "x", **SMALL)
    with pytest.raises(DataError, match="use --overwrite"):
        generate_synthetic(tmp_path / "x", **SMALL)
    generate_synthetic(tmp_path / "x", overwrite=True, fmt="rstpreid", **SMALL)
    names = sorted(p.name for p in (tmp_path / "x").iterdir())
    assert names == ["data_captions.json", "imgs", "ssan-synth-truth.json", "ssan-synth.json"]
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        generate_synthetic(tmp_path / "y", overwrite=True, **SMALL)
    assert (tmp_path / "y" / "keep.txt").exists()


def test_small_split_counts_give_each_split_an_identity(tmp_path):
    result = generate_synthetic(tmp_path / "x", ids=3, size=(32, 16))
    assert {s: c["identities"] for s, c in result["splits"].items()} == {"train": 1, "val": 1, "test": 1}
