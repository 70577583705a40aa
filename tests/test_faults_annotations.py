"""Faults catalogue, annotations and text queries as hostile input.

Annotations: hypothesis generates malformed annotation files (wrong types, missing keys, huge
captions, non-UTF-8 bytes, unicode oddities, duplicate image paths, ids of every type) and
``ssan prepare`` runs on each, in-process through ``ssan.cli.main``: it either succeeds with a
loadable prepared directory or exits 2 with its report; never a traceback, never a half-written
output, and a previous good output is never damaged.

Queries: only unknown words, emoji, 10,000 characters, empty, whitespace, control characters,
through :class:`ssan.search.Searcher` and ``ssan search``: a clear answer or a one-line error.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import run_cli
from ssan.data import load_prepared

IMAGES = [f"cam{c}/{i:03d}.png" for c in (1, 2) for i in range(6)]
WORDS = ["a", "man", "woman", "red", "blue", "shirt", "jeans", "black", "bag", "shoes", "hair", "long"]
ODD_TEXT = [
    "",
    " ",
    "\t\n",
    "\u200b\u200d",
    "\u202eevil\u202c",
    "e\u0301te\u0301",
    "ｒｅｄ ｓｈｉｒｔ",
    "\ufb01ne",
    "\U0001f9e5\U0001f456",
    "\x00\x01\x7f",
    "İstanbul ǅ ß",
    "a" * 70_000,
    "red " * 20_000,
    "\ud800 lone",
]
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)


def assert_clean_error(code: int, err: str, command: str) -> None:
    assert code == 2, err
    assert err.startswith(f"ssan {command}: error: "), err[:500]
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """A folder of small valid images shared by every generated dataset."""
    root = tmp_path_factory.mktemp("annot-images")
    for i, name in enumerate(IMAGES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 32), (i * 20, 80, 160)).save(path)
    return root


# ----------------------------------------------------------------- strategies
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
ids = st.one_of(
    st.integers(min_value=0, max_value=5),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.just(2**63 - 1),
    st.just(2**63),
    st.just(10**400),
    st.sampled_from(["3", " 4 ", "007", "x1", "٣", "1" * 5000]),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    json_values,
)
good_captions = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join), min_size=1, max_size=3)
captions = st.one_of(
    good_captions,
    st.lists(st.sampled_from(ODD_TEXT), min_size=1, max_size=2),
    st.sampled_from(ODD_TEXT),
    st.lists(st.text(max_size=30), max_size=3),
    json_values,
)
paths = st.one_of(
    st.sampled_from(IMAGES),
    st.sampled_from(
        [
            "../outside.png",
            "/etc/passwd",
            "cam1/../../x.png",
            "C:\\x.png",
            "missing.png",
            "cam1",
            ".",
            "a\x00b.png",
            "x" * 300 + ".png",
            "cam1\\000.png",
            " cam1/000.png ",
        ]
    ),
    json_values,
)
splits = st.one_of(st.sampled_from(["train", "test", "val", "TRAIN", " Test ", "", " "]), json_values)
FIELDS = {
    "split": splits,
    "captions": captions,
    "file_path": paths,
    "img_path": paths,
    "id": ids,
    "processed_tokens": json_values,
}


@st.composite
def records(draw):
    """One record: a good one, a damaged good one (keys dropped or re-typed), or garbage."""
    kind = draw(st.sampled_from(["good", "damaged", "garbage"]))
    if kind == "garbage":
        return draw(json_values)
    record = {
        "split": draw(st.sampled_from(["train", "train", "test", "val"])),
        "captions": draw(good_captions),
        "file_path": draw(st.sampled_from(IMAGES)),
        "id": draw(st.integers(0, 3)),
    }
    if kind == "damaged":
        for key in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
            if draw(st.booleans()):
                record.pop(key, None)
            else:
                record[key] = draw(FIELDS[key])
        if draw(st.booleans()):
            record[draw(st.text(max_size=5))] = draw(json_values)
    return record


@st.composite
def annotation_files(draw):
    """The bytes of an annotation file: JSON of generated records, sometimes damaged at byte level."""
    good = [
        {"split": "train", "captions": ["a man in a red shirt and blue jeans"], "file_path": IMAGES[i], "id": i // 2}
        for i in range(4)
    ]
    data = (good if draw(st.integers(0, 3)) else []) + draw(st.lists(records(), max_size=8))
    if draw(st.integers(0, 9)) == 0:
        data = draw(json_values)  # not a list at all
    text = json.dumps(data, ensure_ascii=draw(st.booleans()), allow_nan=True)
    raw = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["bom", "bytes", "truncate", "latin1", "deep"]))
    if damage == "bom":
        raw = b"\xef\xbb\xbf" + raw
    elif damage == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    elif damage == "truncate":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "latin1":
        raw = json.dumps(
            [{"split": "train", "captions": ["café crème"], "file_path": IMAGES[0], "id": 1}], ensure_ascii=False
        ).encode("latin-1")
    elif damage == "deep":
        raw = b"[" * 100_000 + b"]" * 100_000
    return raw


# ------------------------------------------------------------------ prepare
OPTIONS = [
    [],
    ["--skip-invalid"],
    ["--skip-invalid"],
    ["--skip-invalid", "--keep-unknown"],
    ["--min-count", "1", "--skip-invalid"],
]


def check_prepare(image_dir: Path, raw: bytes, options: list) -> int:
    """Run ``ssan prepare`` on one generated annotation file; returns the exit status."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        root.mkdir()
        (root / "imgs").symlink_to(image_dir, target_is_directory=True)
        (root / "reid_raw.json").write_bytes(raw)
        out = Path(tmp) / "prepared"
        code, _, err = run_cli(
            "prepare", "--dataset", "cuhk-pedes", "--root", root, "--out", out, "--workers", "2", *options
        )
        if code == 0:
            prepared = load_prepared(out)  # the output is complete and consistent
            assert prepared.splits and prepared.num_classes >= 1
            for split in prepared.splits:
                for record in prepared.records(split):
                    assert record["tokens"] and all(
                        0 < t < len(prepared.vocab) for ids in record["tokens"] for t in ids
                    )
                    assert 0 <= record["id"] < 2**63
        else:
            assert_clean_error(code, err, "prepare")
            assert not out.exists(), "a failed prepare left an output behind"
            assert not [p for p in Path(tmp).iterdir() if p.name.startswith(".prepared")], "temporary left"
    return code


@SETTINGS
@given(raw=annotation_files(), options=st.sampled_from(OPTIONS))
def test_prepare_never_crashes_on_generated_annotations(image_dir, raw, options, record_property):
    check_prepare(image_dir, raw, options)
    record_property("cases", 1)


def test_prepare_known_nasty_annotations(image_dir, record_property):
    """Hand-picked cases hypothesis might not reach in a short run."""
    base = {"split": "train", "captions": ["a man in a red shirt"], "id": 1}
    cases = [
        json.dumps([{**base, "file_path": IMAGES[0], "id": "1" * 5000}]).encode(),  # int() digit limit
        b"[" + b"1" * 5000 + b"]",  # JSON integer over Python's digit limit
        json.dumps([{**base, "file_path": IMAGES[0], "id": 2**64}]).encode(),  # overflows int64
        json.dumps([{**base, "file_path": "a\x00b.png"}]).encode(),  # NUL in a path
        json.dumps([{**base, "file_path": "x" * 5000 + ".png"}]).encode(),  # name too long for the OS
        json.dumps([{**base, "file_path": IMAGES[i], "captions": ["\ud800 red shirt"]} for i in range(2)]).encode(),
        json.dumps([{**base, "file_path": IMAGES[i] if i < 3 else "\ud800.png"} for i in range(4)]).encode(),
        json.dumps([{**base, "file_path": IMAGES[i], "captions": ["red " * 50_000]} for i in range(2)]).encode(),
        json.dumps([{**base, "file_path": IMAGES[0]}, {**base, "file_path": IMAGES[0]}]).encode(),  # duplicate path
        json.dumps([{**base, "file_path": IMAGES[0], "id": float("nan")}]).encode(),
        b"\xff\xfe" + json.dumps([base]).encode("utf-16-le"),
        b"",
    ]
    codes = [check_prepare(image_dir, raw, options) for raw in cases for options in ([], ["--skip-invalid"])]
    assert set(codes) <= {0, 2}
    record_property("cases", len(codes))


def test_no_data_lost_failed_prepare_keeps_previous_output(image_dir, tmp_path, record_property):
    """A prepare that fails on bad input leaves the previous good output byte-identical."""
    root = tmp_path / "ds"
    root.mkdir()
    (root / "imgs").symlink_to(image_dir, target_is_directory=True)
    good = [
        {"split": "train", "captions": ["a man in a red shirt"], "file_path": IMAGES[i], "id": i // 2} for i in range(4)
    ]
    (root / "reid_raw.json").write_text(json.dumps(good))
    out = tmp_path / "prepared"
    assert run_cli("prepare", "--dataset", "cuhk-pedes", "--root", root, "--out", out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad_files = [b"{not json", json.dumps(good + [{"split": 3}]).encode(), b"[]", b"\xff" * 10]
    for raw in bad_files:
        (root / "reid_raw.json").write_bytes(raw)
        code, _, err = run_cli("prepare", "--dataset", "cuhk-pedes", "--root", root, "--out", out)
        assert_clean_error(code, err, "prepare")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "prepared"]  # no temporary left over
    record_property("cases", len(bad_files))


# ------------------------------------------------------------------ queries
HOSTILE_QUERIES = [
    "zzqx vlorp blenk",  # only unknown words
    "\U0001f600\U0001f9e5\U0001f456",  # emoji only
    "a man in a red shirt \U0001f600",  # emoji around known words
    "red " * 2_500,  # 10,000 characters of known words
    pytest.param("x" * 10_000, id="10000-char-unknown-word"),
    "",
    " ",
    "\t\n\r ",
    "\x00\x01\x02",
    "red\x00shirt",
    "\u200b\u200b",
    "\u202ered shirt\u202c",
    "ＲＥＤ ＳＨＩＲＴ",
    "man" + "\u0301" * 1000,
    "\ud800",
    "!!!???...",
    "<script>alert(1)</script> red",
    "' OR 1=1 --",
    "%s %n %x {0} ${x}",
    "../../etc/passwd",
]


@pytest.fixture(scope="module")
def query_index(tiny_checkpoint, prepared_synth, tmp_path_factory):
    from ssan.search import build_index

    out = tmp_path_factory.mktemp("query-index") / "index"
    build_index(out, tiny_checkpoint, data=prepared_synth, split="test", progress=False)
    return out


@pytest.fixture(scope="module")
def searcher(query_index):
    from ssan.search import Searcher

    return Searcher(query_index, device="cpu")


@pytest.mark.parametrize("query", HOSTILE_QUERIES, ids=lambda q: ascii(q[:16]))
def test_query_searcher_answers_or_refuses_clearly(searcher, query, record_property):
    from ssan.search import QueryError

    try:
        answer = searcher.search(query, k=5)
    except QueryError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 1000
        record_property("cases", 1)
        return
    assert 1 <= len(answer["results"]) <= 5
    assert answer["tokens"] and all(isinstance(w, str) for w in answer["tokens"])
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True) and all(s == s for s in scores)  # sorted, no NaN
    json.dumps(answer)  # JSON-ready
    record_property("cases", 1)


def test_query_known_and_unknown_words_are_reported(searcher, record_property):
    answer = searcher.search("a man zzqx in a red shirt", k=3)
    assert "zzqx" in answer["unknown_words"] and "zzqx" not in answer["tokens"]
    long = searcher.search("red " * 2_500, k=3)
    assert long["truncated"] is True and len(long["tokens"]) == searcher.max_length
    for bad_k in (0, -1, True, 2.5, "3"):
        from ssan.search import QueryError

        with pytest.raises(QueryError):
            searcher.search("a man", k=bad_k)
    record_property("cases", 7)


@pytest.mark.parametrize("query", ["zzqx vlorp", "\U0001f600", "", "   ", "x" * 10_000, "red\x00shirt", "red " * 2_500])
def test_query_cli_answers_or_one_line_error(query_index, query, record_property):
    code, out, err = run_cli("search", "--index", query_index, "--json", "-k", "3", "--", query)
    if code == 0:
        answer = json.loads(out)
        assert answer["results"] and answer["query"] == query
    else:
        assert_clean_error(code, err, "search")
        assert len(err.strip().splitlines()) == 1
    record_property("cases", 1)


@SETTINGS
@given(
    query=st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.text(alphabet=string.printable, max_size=50)
)
def test_query_generated_text_never_crashes(searcher, query, record_property):
    from ssan.search import QueryError

    try:
        answer = searcher.search(query, k=3)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert answer["results"] and answer["tokens"]
    record_property("cases", 1)


def test_no_data_lost_query_index_unchanged(query_index, searcher, record_property):
    """Hostile queries only read: the index folder is byte-identical afterwards."""
    from ssan.search import QueryError

    before = {p.name: p.read_bytes() for p in sorted(Path(query_index).iterdir()) if p.is_file()}
    for query in [q for q in HOSTILE_QUERIES if isinstance(q, str)]:
        try:
            searcher.search(query, k=3)
        except QueryError:
            pass
    assert {p.name: p.read_bytes() for p in sorted(Path(query_index).iterdir()) if p.is_file()} == before
    record_property("cases", 1)
