"""``prepare``: the three formats end to end, the vocabulary and identity rules, output handling."""

import json
from collections import Counter

import pytest
from PIL import Image

from ssan.data import generate_synthetic, load_prepared, prepare_dataset
from ssan.data.formats import DATASET_FORMATS
from ssan.errors import DataError

SMALL = {"ids": 12, "size": (32, 16)}


def synth(tmp_path, fmt="cuhk-pedes", name="data", **kwargs):
    root = tmp_path / name
    generate_synthetic(root, fmt=fmt, **{**SMALL, **kwargs})
    return root


def expected_counts(root, fmt, name=None):
    """Counts computed from the generator's JSON alone."""
    records = json.loads((root / (name or DATASET_FORMATS.get(fmt).files[0])).read_text())
    per_id = Counter(r["id"] for r in records if r["split"] == "train")
    counts = {}
    for split in ("train", "val", "test"):
        rows = [r for r in records if r["split"] == split and (split != "train" or per_id[r["id"]] >= 2)]
        if rows:
            counts[split] = {
                "images": len(rows),
                "captions": sum(len(r["captions"]) for r in rows),
                "identities": len({r["id"] for r in rows}),
            }
    return counts


@pytest.mark.parametrize("fmt", ["cuhk-pedes", "icfg-pedes", "rstpreid"])
def test_each_format_synth_then_prepare(tmp_path, fmt):
    root = synth(tmp_path, fmt)
    summary = prepare_dataset(fmt, root)
    assert summary["splits"] == expected_counts(root, fmt)
    assert set(summary["splits"]) == ({"train", "test"} if fmt == "icfg-pedes" else {"train", "val", "test"})
    assert summary["num_classes"] == summary["splits"]["train"]["identities"]
    assert summary["dropped_train_ids"] == [] and summary["skipped"] == []
    prepared = load_prepared(root / "ssan-prepared")
    assert prepared.name == fmt and prepared.num_classes == summary["num_classes"]
    assert prepared.image_root == (root / "imgs").absolute()
    train = prepared.records("train")
    assert sorted({r["label"] for r in train}) == list(range(summary["num_classes"]))
    assert all(r["label"] is None for r in prepared.records("test"))
    for record in train:
        assert (prepared.image_root / record["image"]).is_file()
        assert len(record["tokens"]) == len(record["captions"])
    if fmt == "rstpreid":
        assert summary["retokenized_records"] == 0  # no processed_tokens at all is not "retokenized"


def test_icfg_alternative_file_name(tmp_path):
    root = synth(tmp_path, "icfg-pedes")
    (root / "ICFG-PEDES.json").rename(root / "ICFG_PEDES.json")
    summary = prepare_dataset("icfg-pedes", root)
    assert summary["annotation"].endswith("ICFG_PEDES.json")
    assert summary["splits"] == expected_counts(root, "icfg-pedes", "ICFG_PEDES.json")


def test_missing_processed_tokens_gives_the_same_output(tmp_path):
    root = synth(tmp_path)
    with_tokens = prepare_dataset("cuhk-pedes", root, tmp_path / "a")
    records = json.loads((root / "reid_raw.json").read_text())
    for record in records:
        del record["processed_tokens"]
    (root / "reid_raw.json").write_text(json.dumps(records))
    without = prepare_dataset("cuhk-pedes", root, tmp_path / "b")
    assert without["splits"] == with_tokens["splits"]
    for name in ("vocab.json", "train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def handmade(root, records, name="reid_raw.json"):
    (root / "imgs").mkdir(parents=True)
    for record in records:
        Image.new("RGB", (8, 16), (200, 30, 30)).save(root / "imgs" / record["file_path"])
    (root / name).write_text(json.dumps(records))
    return root


def rec(split, identity, path, *captions):
    return {"split": split, "id": identity, "file_path": path, "captions": list(captions)}


def test_vocabulary_train_only_min_count_and_labels(tmp_path):
    records = [
        rec("train", 10, "a.png", "A red shirt.", "red hat"),
        rec("train", 10, "b.png", "a blue shirt"),
        rec("train", 2, "c.png", "a blue coat"),
        rec("train", 2, "d.png", "the blue coat"),
        rec("train", 7, "e.png", "red coat"),
        rec("train", 7, "f.png", "red coat"),
        rec("train", 3, "g.png", "a red shirt"),  # single image: dropped
        rec("test", 99, "h.png", "green green green shirt", "zzz qqq"),
        rec("test", 98, "i.png", "zzz"),
    ]
    root = handmade(tmp_path / "hand", records)
    summary = prepare_dataset("cuhk-pedes", root)
    vocab = json.loads((root / "ssan-prepared" / "vocab.json").read_text())["words"]
    # train only (no "green"), count >= 2 (no "hat", "the"); id 3 still counts for the vocabulary
    assert vocab == ["<pad>", "red", "a", "coat", "blue", "shirt"]  # by count, then alphabetical
    assert summary["dropped_train_ids"] == [3]
    assert summary["num_classes"] == 3
    train = [json.loads(line) for line in (root / "ssan-prepared" / "train.jsonl").read_text().splitlines()]
    assert [(r["id"], r["label"]) for r in train] == [(10, 2), (10, 2), (2, 0), (2, 0), (7, 1), (7, 1)]
    assert train[0]["tokens"] == [[2, 1, 5], [1]]
    test = load_prepared(root / "ssan-prepared").records("test")
    assert test == [
        {
            "image": "h.png",
            "id": 99,
            "label": None,
            "captions": ["green green green shirt"],
            "tokens": [[5]],
            "words": [["green", "green", "green", "shirt"]],
        }
    ]
    assert summary["empty_captions"] == 2
    assert summary["skipped"] == [{"index": 8, "file": "i.png", "reason": "no caption has a known word"}]
    assert summary["splits"]["test"] == {"images": 1, "captions": 1, "identities": 1}


def test_keep_unknown_and_truncation(tmp_path):
    records = [
        rec("train", 1, "a.png", "a red shirt and blue jeans"),
        rec("train", 1, "b.png", "a red shirt"),
        rec("test", 5, "c.png", "a green shirt"),
    ]
    root = handmade(tmp_path / "hand", records)
    summary = prepare_dataset("cuhk-pedes", root, drop_unknown=False, max_length=2)
    prepared = load_prepared(root / "ssan-prepared")
    assert prepared.vocab.to_list()[:2] == ["<pad>", "<unk>"]
    assert summary["drop_unknown"] is False and summary["truncated_captions"] == 3
    test = prepared.records("test")[0]
    assert test["tokens"] == [[prepared.vocab.id("a"), 1]]
    assert all(len(t) <= 2 for r in prepared.records("train") for t in r["tokens"])


def test_no_trainable_identity_is_an_error(tmp_path):
    root = handmade(tmp_path / "hand", [rec("train", 1, "a.png", "a b"), rec("test", 2, "b.png", "a b")])
    with pytest.raises(DataError, match="no training identity with at least two usable images"):
        prepare_dataset("cuhk-pedes", root)
    assert not (root / "ssan-prepared").exists()


def test_rerun_is_byte_identical(tmp_path):
    root = synth(tmp_path)
    prepare_dataset("cuhk-pedes", root, workers=1)
    first = {p.name: p.read_bytes() for p in (root / "ssan-prepared").iterdir()}
    prepare_dataset("cuhk-pedes", root, workers=4)
    second = {p.name: p.read_bytes() for p in (root / "ssan-prepared").iterdir()}
    assert first == second and set(first) == {"summary.json", "vocab.json", "train.jsonl", "val.jsonl", "test.jsonl"}
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_replace_another_dataset_without_overwrite(tmp_path):
    cuhk, rstp, out = synth(tmp_path, name="cuhk"), synth(tmp_path, "rstpreid", name="rstp"), tmp_path / "out"
    prepare_dataset("cuhk-pedes", cuhk, out)
    with pytest.raises(DataError, match="holds another prepared dataset .*use --overwrite"):
        prepare_dataset("rstpreid", rstp, out)
    assert load_prepared(out).name == "cuhk-pedes"
    prepare_dataset("rstpreid", rstp, out, overwrite=True)  # the name generate_synthetic and build_index use
    assert load_prepared(out).name == "rstpreid"
    with pytest.warns(DeprecationWarning, match="force"):
        prepare_dataset("cuhk-pedes", cuhk, out, force=True)  # the former name still works
    assert load_prepared(out).name == "cuhk-pedes"


def test_refuses_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    root = synth(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="holds no prepared dataset"):
            prepare_dataset("cuhk-pedes", root, tmp_path / "mine", overwrite=overwrite)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    prepare_dataset("cuhk-pedes", root, tmp_path / "empty")
    assert (tmp_path / "empty" / "summary.json").is_file()


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    import ssan.data.prepare as module

    root = synth(tmp_path)

    def failing_write(directory, summary, built):
        (directory / "summary.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "_write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("cuhk-pedes", root)
    assert sorted(p.name for p in root.iterdir()) == [
        "imgs",
        "reid_raw.json",
        "ssan-synth-truth.json",
        "ssan-synth.json",
    ]


def test_load_prepared_errors(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        load_prepared(tmp_path / "nothing")
    with pytest.raises(DataError, match="summary.json is missing"):
        load_prepared(tmp_path)
    root = synth(tmp_path)
    prepare_dataset("cuhk-pedes", root)
    out = root / "ssan-prepared"
    with pytest.raises(DataError, match="no 'val2' split"):
        load_prepared(out).records("val2")
    (out / "test.jsonl").write_text('{"image": "x"}\n')
    with pytest.raises(DataError, match="test.jsonl line 1"):
        load_prepared(out).records("test")
    (out / "val.jsonl").unlink()
    with pytest.raises(DataError, match="val.jsonl is missing"):
        load_prepared(out)
    (out / "vocab.json").write_text("[")
    with pytest.raises(DataError, match="vocab.json"):
        load_prepared(out)


# ------------------------------------------------------------ tokens as the dataset gives them
def tokens_case(tmp_path, records):
    root = tmp_path / "given"
    (root / "imgs").mkdir(parents=True)
    for record in records:
        Image.new("RGB", (16, 32), (120, 30, 30)).save(root / "imgs" / record["file_path"])
    (root / "reid_raw.json").write_text(json.dumps(records), encoding="utf-8")
    return root


def given(split, path, identity, tokens):
    return {
        "split": split,
        "captions": [" ".join(tokens)],
        "file_path": path,
        "id": identity,
        "processed_tokens": [tokens],
    }


GIVEN = [
    given("train", "a.png", 1, ["A", "man", "in", "a", "t-shirt"]),
    given("train", "b.png", 1, ["a", "man", "in", "a", "T-shirt", "and", "jeans"]),
    given("train", "c.png", 2, ["a", "woman", "in", "jeans"]),
    given("train", "d.png", 2, ["a", "woman", "He's", "walking"]),
    given("test", "e.png", 3, ["a", "man", "in", "a", "t-shirt", "with", "a", "hat"]),
]


def test_processed_tokens_are_used_as_given_lower_cased(tmp_path):
    root = tokens_case(tmp_path, GIVEN)
    summary = prepare_dataset("cuhk-pedes", root, tmp_path / "out")
    prepared = load_prepared(tmp_path / "out")
    assert "t-shirt" in prepared.vocab and "t" not in prepared.vocab  # hyphenated tokens kept whole
    assert "a" in prepared.vocab and "A" not in prepared.vocab  # capitalised tokens lower-cased, not dropped
    first = prepared.records("train")[0]
    assert first["words"] == [["a", "man", "in", "a", "t-shirt"]]
    assert prepared.vocab.decode(first["tokens"][0]) == ["a", "man", "in", "a", "t-shirt"]
    tokens = summary["tokens"]
    assert tokens["source"] == "as given, lower-cased"
    assert (tokens["lowercased"], tokens["retokenized"]) == (3, 0)  # "A", "T-shirt", "He's"
    assert tokens["tokens"] == {"train": 20, "test": 8}
    assert tokens["unknown_dropped"] == {"train": 3, "test": 2}  # and, he's, walking (seen once) / with, hat
    test = prepared.records("test")[0]
    assert prepared.vocab.decode(test["tokens"][0]) == ["a", "man", "in", "a", "t-shirt", "a"]


def test_retokenize_option_splits_given_tokens_and_counts_the_changes(tmp_path):
    root = tokens_case(tmp_path, GIVEN)
    summary = prepare_dataset("cuhk-pedes", root, tmp_path / "out", retokenize=True)
    prepared = load_prepared(tmp_path / "out")
    assert "t" in prepared.vocab and "shirt" in prepared.vocab and "t-shirt" not in prepared.vocab
    assert summary["tokens"]["source"] == "retokenized"
    assert summary["tokens"]["retokenized"] == 4  # t-shirt, T-shirt, He's, t-shirt (test)
    assert prepared.records("train")[3]["words"] == [["a", "woman", "hes", "walking"]]
