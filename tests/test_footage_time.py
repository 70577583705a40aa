"""Footage as deployments keep it: wall-clock times of tracks, and private index files."""

from __future__ import annotations

import json
import logging
import shutil
import stat
from pathlib import Path

import pytest

from footage import remux_with_creation_time
from helpers import run_cli, save_random_checkpoint
from ssan.errors import SsanError
from ssan.search import Searcher
from ssan.video import IngestOptions, build_track_index, generate_synthetic_video
from ssan.video.clock import parse_time, time_from_name

FPS = 10


@pytest.fixture(scope="module")
def street(prepared_synth, tmp_path_factory):
    """A 4 s synthetic street scene, its ground truth and a random tiny model."""
    base = tmp_path_factory.mktemp("time")
    generate_synthetic_video(base / "scene", seconds=4, people=3, fps=FPS, size=(144, 256), seed=1, progress=False)
    return {
        "video": base / "scene" / "video.mp4",
        "gt": base / "scene" / "gt" / "gt.txt",
        "checkpoint": save_random_checkpoint(base / "model.pt", prepared_synth),
    }


def index(street, out: Path, videos: list, **kwargs):
    return build_track_index(
        out,
        street["checkpoint"],
        videos,
        detections=street["gt"],
        options=IngestOptions(fps=FPS, keep_ids=True, keep=2),
        progress=False,
        **kwargs,
    )


def test_start_time_gives_every_track_utc_start_and_end(street, tmp_path):
    built = index(street, tmp_path / "idx", [street["video"]], start_time="2026-12-01T09:00:00+01:00")
    assert built.meta["sources"][0]["start_time"] == "2026-12-01T08:00:00.000Z"
    assert built.meta["sources"][0]["time_source"] == "start-time"
    for entry in built.entries:
        assert parse_time(entry["utc_start"]) == parse_time("2026-12-01T08:00:00Z") + _seconds(entry["start"])
        assert parse_time(entry["utc_end"]) == parse_time("2026-12-01T08:00:00Z") + _seconds(entry["end"])
    answer = Searcher(tmp_path / "idx").search("a man", k=2)
    for r in answer["results"]:  # results: ISO 8601 UTC start and end, and the offsets in the file
        entry = built.entries[r["image_id"]]
        assert r["time_base"] == "utc" and (r["start"], r["end"]) == (entry["utc_start"], entry["utc_end"])
        assert r["start"].endswith("Z") and (r["offset_start"], r["offset_end"]) == (entry["start"], entry["end"])
        assert "utc_start" not in r
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man", "-k", "2", "--json")
    assert code == 0, err
    assert [r["start"] for r in json.loads(out)["results"]] == [r["start"] for r in answer["results"]]


def _seconds(value: float):
    from datetime import timedelta

    return timedelta(seconds=value)


def test_time_from_name_and_creation_time(street, tmp_path):
    named = Path(shutil.copy(street["video"], tmp_path / "gate_20261201_073015.mp4"))
    stamped = remux_with_creation_time(street["video"], tmp_path / "door.mp4", "2026-11-30T23:59:58.000000Z")
    built = index(street, tmp_path / "named", [named], time_from_name="%Y%m%d_%H%M%S")
    assert built.meta["sources"][0]["start_time"] == "2026-12-01T07:30:15.000Z"
    built = index(street, tmp_path / "stamped", [stamped])
    assert (built.meta["sources"][0]["start_time"], built.meta["sources"][0]["time_source"]) == (
        "2026-11-30T23:59:58.000Z",
        "creation_time",
    )
    late = max(built.entries, key=lambda e: e["end"])
    assert late["utc_end"].startswith("2026-12-01T00:00:0")  # the track runs past midnight


def test_a_source_without_a_start_has_offsets_and_says_so(street, tmp_path):
    built = index(street, tmp_path / "idx", [street["video"]])
    assert built.meta["sources"][0]["start_time"] is None
    assert all("utc_start" not in e for e in built.entries)
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man", "--json")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert {r["time_base"] for r in results} == {"offset"}
    for r in results:  # the offsets in the file, as floats, under both names
        entry = built.entries[r["image_id"]]
        assert r["start"] == r["offset_start"] == entry["start"] and r["end"] == r["offset_end"] == entry["end"]
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man")
    assert code == 0 and "times: seconds from the start of each file (no wall-clock start known" in out


def test_search_prints_utc_times_when_known(street, tmp_path):
    index(street, tmp_path / "idx", [street["video"]], start_time="2026-12-01T08:00:00Z")
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man", "-k", "2")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert len(rows) == 2 and all(r[3].startswith("2026-12-01T08:00:0") and r[3].count("Z") == 2 for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--start-time", "yesterday"], "is not an ISO 8601 time"),
        (["--start-time", "2026-12-01T08:00:00"], "has no zone"),
        (["--time-from-name", "%Y%m%d", "--start-time", "2026-12-01T08:00:00Z"], "choose one"),
        (["--time-from-name", "%Y-%j"], "use %Y (required)"),
        (["--time-from-name", "%Y%m%d_%H%M%S"], "its name holds no time matching"),
    ],
)
def test_bad_times_are_one_line_errors(street, tmp_path, args, message):
    code, _, err = run_cli(
        "index", "--checkpoint", street["checkpoint"], "--video", street["video"], "--detections", street["gt"],
        "--keep-ids", "--out", tmp_path / "idx", *args,
    )  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "idx").exists()


def test_time_from_name_reads_a_time_anywhere_in_the_name():
    assert time_from_name("/x/cam-2026-12-01 08.30.00.mkv", "%Y-%m-%d %H.%M.%S").hour == 8
    with pytest.raises(SsanError, match="holds no time"):
        time_from_name("/x/cam-2026-13-01.mkv", "%Y-%m-%d")  # month 13


def test_index_folders_are_private_and_serve_warns_when_they_are_not(street, tmp_path, caplog):
    from ssan.commands.serve import _warn_if_readable

    out = tmp_path / "idx"
    index(street, out, [street["video"]])
    for path in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    assert list((out / "crops").glob("*.jpg"))
    (out / "onnx").mkdir()
    (out / "onnx").chmod(0o755)  # an export of the model: no one's picture, no warning
    with caplog.at_level(logging.WARNING, logger="ssan"):
        _warn_if_readable(str(out))
    assert not caplog.records
    (out / "crops").chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="ssan"):
        _warn_if_readable(str(out))
    assert [r.getMessage() for r in caplog.records] == [
        f"index folder {out / 'crops'} is readable by other users (mode 755): it holds people's pictures "
        f"and features; run `chmod -R go-rwx {out}`"
    ]
