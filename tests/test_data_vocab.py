"""Tokenizer and Vocabulary."""

import pytest

from ssan.data.vocab import PAD, UNK, Vocabulary, normalize_tokens, tokenize
from ssan.errors import DataError


@pytest.mark.parametrize(
    "text, words",
    [
        ("He's wearing a red shirt.", ["hes", "wearing", "a", "red", "shirt"]),
        ("shirt.His trousers", ["shirt", "his", "trousers"]),
        ("He\u2019s in a T-shirt", ["hes", "in", "a", "t", "shirt"]),
        ("  multiple   spaces\tand\nnewlines ", ["multiple", "spaces", "and", "newlines"]),
        ("black/white, 2 bags; (striped)!", ["black", "white", "2", "bags", "striped"]),
        ("snake_case", ["snake", "case"]),
        ("CAF\u00c9 cafe\u0301", ["caf\u00e9", "caf\u00e9"]),  # composed and decomposed accents agree
        ("\uff32\uff25\uff24 \ufb01ne", ["red", "fine"]),  # full-width letters, ligature
        ("...", []),
        ("", []),
        ("don't  o'clock ''", ["dont", "oclock"]),
    ],
)
def test_tokenize(text, words):
    assert tokenize(text) == words


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError):
        tokenize(None)


def test_normalize_tokens_matches_tokenize():
    assert normalize_tokens(["He's", "T-shirt", "", "Blue"]) == ["hes", "t", "shirt", "blue"]


def test_free_text_keeps_compounds_the_vocabulary_knows():
    assert tokenize("A red T-shirt, blue-green jeans", keep_hyphens=True) == [
        "a",
        "red",
        "t-shirt",
        "blue-green",
        "jeans",
    ]
    vocab = Vocabulary([PAD, "red", "t-shirt", "blue", "green", "jeans"])
    assert vocab.words_of("A red T-shirt, blue-green jeans") == ["a", "red", "t-shirt", "blue", "green", "jeans"]
    ids, unknown = vocab.encode("a red T-shirt")
    assert vocab.decode(ids) == ["red", "t-shirt"] and unknown == ["a"]
    split_only = Vocabulary([PAD, "t", "shirt"])
    assert split_only.decode(split_only.encode("t-shirt")[0]) == ["t", "shirt"]


def test_build_min_count_order_and_padding():
    captions = [["a", "red", "shirt"], ["a", "blue", "shirt"], ["a", "red", "hat"]]
    vocab = Vocabulary.build(captions, min_count=2)
    assert vocab.to_list() == [PAD, "a", "red", "shirt"]  # by count, then alphabetical
    assert len(vocab) == 4 and vocab.unk_id is None
    assert Vocabulary.build(reversed(captions), min_count=2) == vocab
    assert Vocabulary.build(captions, min_count=1).to_list() == [PAD, "a", "red", "shirt", "blue", "hat"]


def test_encode_drops_unknown_words():
    vocab = Vocabulary([PAD, "a", "red", "shirt"])
    assert vocab.encode("A red, GREEN shirt") == ([1, 2, 3], ["green"])
    assert vocab.encode_tokens(["<pad>", "red"]) == ([2], ["<pad>"])
    assert vocab.decode([1, 2, 0, 0]) == ["a", "red"]


def test_encode_maps_unknown_to_unk_when_present():
    vocab = Vocabulary.build([["red", "red"]], min_count=2, unknown=True)
    assert vocab.to_list() == [PAD, UNK, "red"] and vocab.unk_id == 1
    assert vocab.encode("red green") == ([2, 1], ["green"])


def test_save_load_roundtrip(tmp_path):
    vocab = Vocabulary([PAD, "caf\u00e9", "red"])
    vocab.save(tmp_path / "vocab.json")
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab


@pytest.mark.parametrize("words", [[], ["a", PAD], [PAD, "a", "a"], [PAD, ""], [PAD, 3]])
def test_invalid_vocabularies(words):
    with pytest.raises(DataError):
        Vocabulary(words)


@pytest.mark.parametrize("content", ["{", '{"words": 3}', "[1, 2]", '{"words": ["a"]}'])
def test_load_bad_files_name_the_file(tmp_path, content):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError, match="vocab.json"):
        Vocabulary.load(path)
