"""Annotation readers: the three layouts, their quirks and per-record validation."""

import json

import pytest

from ssan.data.annotations import find_annotation, read_annotations
from ssan.errors import DataError


def cuhk(**overrides):
    record = {
        "split": "train",
        "captions": ["A man in a red shirt."],
        "file_path": "CUHK01/0001.png",
        "processed_tokens": [["a", "man", "in", "a", "red", "shirt"]],
        "id": 1,
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


def write(root, records, name="reid_raw.json"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "imgs").mkdir(exist_ok=True)
    (root / name).write_text(json.dumps(records), encoding="utf-8")
    return root


def test_cuhk_record_normalised(tmp_path):
    ann = read_annotations(
        "cuhk-pedes",
        write(
            tmp_path,
            [cuhk(split="Train"), cuhk(split="VAL", file_path="b.png"), cuhk(split="query", file_path="./c/d.png")],
        ),
    )
    assert not ann.problems
    first = ann.records[0]
    assert (first.index, first.split, first.image, first.id) == (0, "train", "CUHK01/0001.png", 1)
    assert first.captions == ("A man in a red shirt.",)
    assert first.tokens == (("a", "man", "in", "a", "red", "shirt"),)
    assert [r.split for r in ann.records] == ["train", "val", "val"]
    assert ann.records[2].image == "c/d.png"
    assert ann.image_root == (tmp_path / "imgs").absolute()


def test_caption_all_alias_and_image_root_fallback(tmp_path):
    (tmp_path / "caption_all.json").write_text(json.dumps([cuhk()]))
    assert find_annotation("cuhk-pedes", tmp_path).name == "caption_all.json"
    ann = read_annotations("cuhk-pedes", tmp_path)
    assert ann.image_root == tmp_path.absolute()  # no imgs/: paths relative to the root


@pytest.mark.parametrize("name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_both_file_names(tmp_path, name):
    ann = read_annotations("icfg-pedes", write(tmp_path, [cuhk(id=0), cuhk(split="test", file_path="x.jpg")], name))
    assert ann.annotation.name == name and len(ann.records) == 2


def test_icfg_only_train_and_test(tmp_path):
    ann = read_annotations("icfg-pedes", write(tmp_path, [cuhk(split="val")], "ICFG-PEDES.json"))
    assert not ann.records and "split 'val'" in ann.problems[0].reason


def test_rstpreid_img_path_without_tokens(tmp_path):
    record = {
        "id": 0,
        "img_path": "0000_c14_0031.jpg",
        "split": "train",
        "captions": ["The man is wearing a grey jacket.His trousers are black."],
    }
    ann = read_annotations("rstpreid", write(tmp_path, [record], "data_captions.json"))
    assert ann.records[0].image == "0000_c14_0031.jpg"
    assert ann.records[0].tokens == (
        ("the", "man", "is", "wearing", "a", "grey", "jacket", "his", "trousers", "are", "black"),
    )
    assert ann.retokenized == 0


def test_missing_or_malformed_processed_tokens_fall_back_to_tokenizing(tmp_path):
    records = [
        cuhk(processed_tokens=...),
        cuhk(file_path="b.png", processed_tokens=[["x"], ["y"]]),
        cuhk(file_path="c.png", processed_tokens=[["He's", "T-shirt"]]),
    ]
    ann = read_annotations("cuhk-pedes", write(tmp_path, records))
    assert ann.records[0].tokens == ann.records[1].tokens == (("a", "man", "in", "a", "red", "shirt"),)
    assert ann.records[2].tokens == (("he's", "t-shirt"),)  # given tokens as they are, lower-cased
    assert ann.token_changes["lowercased"] == 2
    assert ann.retokenized == 1
    again = read_annotations("cuhk-pedes", write(tmp_path, records), retokenize=True)
    assert again.records[2].tokens == (("hes", "t", "shirt"),)  # the option: normalised like queries
    assert again.token_changes["retokenized"] == 2


def test_single_string_caption_and_digit_string_id(tmp_path):
    ann = read_annotations("cuhk-pedes", write(tmp_path, [cuhk(captions="A man.", processed_tokens=..., id="17")]))
    assert ann.records[0].captions == ("A man.",) and ann.records[0].id == 17


@pytest.mark.parametrize(
    "record, reason",
    [
        (["not", "a", "dict"], "record is a list"),
        (cuhk(split=...), "missing field 'split'"),
        (cuhk(split=""), "field 'split' must be a non-empty string"),
        (cuhk(captions=...), "missing field 'captions'"),
        (cuhk(captions=[]), "field 'captions' must be a non-empty list"),
        (cuhk(captions=["ok", "  "]), "caption 1 is empty"),
        (cuhk(captions=["ok", 3]), "caption 1 is a number"),
        (cuhk(file_path=...), "missing field 'file_path'"),
        (cuhk(file_path=""), "field 'file_path' must be a non-empty string"),
        (cuhk(file_path="/etc/passwd"), "is absolute"),
        (cuhk(file_path="C:\\x.png"), "is absolute"),
        (cuhk(file_path="../outside.png"), "leaves the image folder"),
        (cuhk(file_path="a/../../b.png"), "leaves the image folder"),
        (cuhk(id=...), "missing field 'id'"),
        (cuhk(id=True), "field 'id' must be a non-negative integer"),
        (cuhk(id=3.0), "field 'id' must be a non-negative integer"),
        (cuhk(id=-1), "field 'id' must be a non-negative integer"),
        (cuhk(id="x12"), "field 'id' must be a non-negative integer"),
    ],
)
def test_record_problems(tmp_path, record, reason):
    ann = read_annotations("cuhk-pedes", write(tmp_path, [cuhk(file_path="good.png"), record]))
    assert [r.index for r in ann.records] == [0]
    assert len(ann.problems) == 1 and ann.problems[0].index == 1
    assert reason in ann.problems[0].reason


def test_several_reasons_and_duplicates(tmp_path):
    records = [cuhk(), cuhk(captions=[], id="no"), cuhk()]
    ann = read_annotations("cuhk-pedes", write(tmp_path, records))
    assert [p.index for p in ann.problems] == [1, 2]
    assert "captions" in ann.problems[0].reason and "id" in ann.problems[0].reason
    assert "duplicate image path (also record 0)" in ann.problems[1].reason
    assert ann.problems[1].file == "CUHK01/0001.png"


@pytest.mark.parametrize(
    "content, message",
    [
        (b'[{"split": "train",\n  "id": 1,,}]', r"invalid JSON at line 2 column 11"),
        (b'{"split": "train"}', "expected a JSON list of records, got an object"),
        (b"[]", "the list of records is empty"),
        (b'["caf\xe9"]', r"not UTF-8 text \(byte 0xe9 at line 1 column 6\)"),
        (b"", "invalid JSON at line 1 column 1"),
    ],
)
def test_file_level_errors_name_the_file(tmp_path, content, message):
    (tmp_path / "reid_raw.json").write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        read_annotations("cuhk-pedes", tmp_path)
    assert "reid_raw.json" in str(info.value)


def test_utf8_bom_is_accepted(tmp_path):
    (tmp_path / "reid_raw.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([cuhk()]).encode())
    assert len(read_annotations("cuhk-pedes", tmp_path).records) == 1


def test_missing_annotation_and_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="no ICFG-PEDES.json or ICFG_PEDES.json"):
        read_annotations("icfg-pedes", tmp_path)
    with pytest.raises(DataError, match="unknown dataset format 'market'; valid: cuhk-pedes"):
        read_annotations("market", tmp_path)
    with pytest.raises(DataError, match="not a directory"):
        read_annotations("cuhk-pedes", tmp_path / "absent")
