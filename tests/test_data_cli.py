"""``ssan synth`` and ``ssan prepare`` through the real CLI entry point, bad input included."""

import json
import logging

import pytest
from PIL import Image

from ssan import cli


@pytest.fixture
def ssan(monkeypatch):
    """Run ``ssan ARGS`` in-process (only the data sub-commands are registered)."""
    monkeypatch.setattr(cli, "COMMANDS", ("synth", "prepare"))
    # the CLI adds its stderr handler once; drop it so it never points at a previous test's captured stream
    monkeypatch.setattr(logging.getLogger("ssan"), "handlers", [])
    return lambda *args: cli.main([str(a) for a in args])


@pytest.fixture
def dataset(tmp_path, ssan):
    root = tmp_path / "cuhk"
    assert ssan("synth", root, "--ids", 10, "--size", "32x16", "--images-per-id", 3) == 0
    return root


def records_of(root):
    return json.loads((root / "reid_raw.json").read_text())


def save_records(root, records):
    (root / "reid_raw.json").write_text(json.dumps(records))


def test_synth_then_prepare_prints_summaries(tmp_path, ssan, capsys):
    root = tmp_path / "rstp"
    assert ssan("synth", root, "--format", "rstpreid", "--ids", 10, "--size", "32x16", "--seed", 3) == 0
    out = capsys.readouterr().out
    assert "wrote 50 images, 100 captions, 10 identities (rstpreid, 32x16)" in out
    assert ssan("prepare", "--dataset", "rstpreid", "--root", root) == 0
    out = capsys.readouterr().out
    assert "prepared rstpreid" in out and "train" in out and "test" in out
    assert (root / "ssan-prepared" / "summary.json").is_file()


def test_prepare_reports_dropped_ids(dataset, ssan, capsys):
    records = records_of(dataset)
    single = records[0]["id"]
    save_records(dataset, [r for r in records if r["id"] != single or r is records[0]])
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset, "--out", dataset / "p") == 0
    assert f"dropped train ids with a single image: {single}" in capsys.readouterr().out
    assert json.loads((dataset / "p" / "summary.json").read_text())["dropped_train_ids"] == [single]


def _corrupt(root, case):
    """Damage the dataset; returns text the error must contain."""
    records = records_of(root)
    image = root / "imgs" / records[4]["file_path"]
    if case == "malformed-json":
        (root / "reid_raw.json").write_text('[{"split": "train"\n, }]')
        return "reid_raw.json: invalid JSON at line 2 column 3"
    if case == "not-a-list":
        (root / "reid_raw.json").write_text('{"records": []}')
        return "reid_raw.json: expected a JSON list of records"
    if case == "missing-field":
        del records[4]["captions"]
        save_records(root, records)
        return "reid_raw.json record 4: missing field 'captions'"
    if case == "empty-field":
        records[4]["file_path"] = ""
        save_records(root, records)
        return "reid_raw.json record 4: field 'file_path' must be a non-empty string"
    rel = f"image imgs/{records[4]['file_path']}"
    if case == "missing-image":
        image.unlink()
        return f"reid_raw.json record 4: {rel}: file not found"
    if case == "empty-image":
        image.write_bytes(b"")
        return f"reid_raw.json record 4: {rel}: file is empty"
    if case == "not-an-image":
        image.write_text("hello")
        return f"reid_raw.json record 4: {rel}: not an image file"
    if case == "truncated-image":
        Image.new("RGB", (64, 128), (250, 0, 0)).save(image, format="PNG")
        image.write_bytes(image.read_bytes()[:-30])
        return f"reid_raw.json record 4: {rel}: cannot decode"
    raise AssertionError(case)


CASES = [
    "malformed-json",
    "not-a-list",
    "missing-field",
    "empty-field",
    "missing-image",
    "empty-image",
    "not-an-image",
    "truncated-image",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_names_the_problem_and_writes_nothing(dataset, ssan, capsys, case):
    expected = _corrupt(dataset, case)
    before = sorted(p.name for p in dataset.iterdir())
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset) == 2
    captured = capsys.readouterr()
    assert "ssan prepare: error:" in captured.err
    assert expected in captured.err
    assert "Traceback" not in captured.err
    assert sorted(p.name for p in dataset.iterdir()) == before  # nothing written, no temporary folder left


def test_bomb_header_is_refused(dataset, ssan, capsys):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    records = records_of(dataset)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    (dataset / "imgs" / records[2]["file_path"]).write_bytes(bomb)
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset) == 2
    err = capsys.readouterr().err
    assert f"record 2: image imgs/{records[2]['file_path']}: refused" in err
    assert not (dataset / "ssan-prepared").exists()


def test_many_problems_are_capped_at_20_lines(dataset, ssan, capsys):
    records = records_of(dataset)
    for record in records:
        record["id"] = "x"
    save_records(dataset, records)
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("ssan prepare: error:")) :]
    assert lines[0].startswith(f"ssan prepare: error: {len(records)} problem(s) in ")
    assert len(lines) == 22 and lines[-1] == f"  ... and {len(records) - 20} more"
    assert all("field 'id' must be a non-negative integer" in line for line in lines[1:21])


def test_skip_invalid_drops_and_lists_bad_records(dataset, ssan, capsys):
    _corrupt(dataset, "missing-field")
    records = records_of(dataset)
    (dataset / "imgs" / records[7]["file_path"]).write_bytes(b"")
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset, "--skip-invalid") == 0
    assert "skipped 2 record(s)" in capsys.readouterr().out
    summary = json.loads((dataset / "ssan-prepared" / "summary.json").read_text())
    assert summary["skipped"] == [
        {"index": 4, "file": records[4]["file_path"], "reason": "missing field 'captions'"},
        {"index": 7, "file": records[7]["file_path"], "reason": "file is empty"},
    ]
    assert sum(s["images"] for s in summary["splits"].values()) == len(records) - 2


def test_overwrite_rules_through_the_cli(tmp_path, dataset, ssan, capsys):
    other = tmp_path / "icfg"
    assert ssan("synth", other, "--format", "icfg-pedes", "--ids", 6, "--size", "32x16") == 0
    out = tmp_path / "prepared"
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset, "--out", out) == 0
    assert ssan("prepare", "--dataset", "cuhk-pedes", "--root", dataset, "--out", out) == 0
    assert ssan("prepare", "--dataset", "icfg-pedes", "--root", other, "--out", out) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert ssan("prepare", "--dataset", "icfg-pedes", "--root", other, "--out", out, "--overwrite") == 0


def test_synth_refuses_to_overwrite_without_overwrite(tmp_path, ssan, capsys):
    root = tmp_path / "s"
    args = ("synth", root, "--ids", 4, "--size", "32x16")
    assert ssan(*args) == 0
    assert ssan(*args) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert ssan(*args, "--overwrite", "--seed", 1) == 0
    assert ssan(*args, "--force", "--seed", 2) == 0  # the former name of --overwrite still works


@pytest.mark.parametrize(
    "args, message", [(("--size", "12"), "expected HxW"), (("--captions-per-image", "a-b"), "expected N or MIN-MAX")]
)
def test_synth_bad_options(tmp_path, ssan, capsys, args, message):
    with pytest.raises(SystemExit) as info:
        ssan("synth", tmp_path / "x", *args)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_synth_invalid_values_exit_2(tmp_path, ssan, capsys):
    assert ssan("synth", tmp_path / "x", "--ids", 0) == 2
    assert "ids and images_per_id must be >= 1" in capsys.readouterr().err
    assert ssan("synth", tmp_path / "x", "--captions-per-image", "3-1") == 2
    assert not (tmp_path / "x").exists()


def test_full_cli_parser_runs_prepare(tmp_path, monkeypatch, capsys):
    """The unrestricted ``ssan`` entry point (all sub-commands registered) reports bad input the same way."""
    monkeypatch.setattr(logging.getLogger("ssan"), "handlers", [])
    (tmp_path / "reid_raw.json").write_text("[1, 2")
    assert cli.main(["prepare", "--dataset", "cuhk-pedes", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ssan prepare: error:" in err and "reid_raw.json: invalid JSON at line 1 column 6" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reid_raw.json"]
