"""`ssan watch`: live cameras (files at their own pace, a real RTSP server), appended tracks, stops and restarts."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from footage import register_gt, rtsp_camera
from helpers import save_random_checkpoint
from ssan.search import Searcher
from ssan.search.index import GalleryIndex
from ssan.video import IngestOptions, VideoError, build_detector, generate_synthetic_video, track_frame
from ssan.video.cameras import Camera
from ssan.video.live import LiveOptions
from ssan.video.watch import Watcher, WatchOptions

pytest.importorskip("av")
FPS = 10
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def street(prepared_synth, tmp_path_factory):
    """A 6 s street scene with 5 walkers (one enters at 1.9 s), its ground-truth detector, a random model."""
    base = tmp_path_factory.mktemp("watch")
    generate_synthetic_video(base / "scene", seconds=6, people=5, fps=FPS, size=(144, 256), seed=0, progress=False)
    register_gt(base / "scene")
    people = json.loads((base / "scene" / "people.json").read_text())
    return {
        "scene": base / "scene",
        "video": base / "scene" / "video.mp4",
        "checkpoint": save_random_checkpoint(base / "model.pt", prepared_synth),
        "people": people["people"],
    }


def watcher(street, out, cameras, speed=0.0, **kwargs) -> Watcher:
    return Watcher(
        out,
        street["checkpoint"],
        cameras,
        build_detector("street-truth", None, "cpu", 0.25),
        IngestOptions(fps=FPS, keep=2, min_score=0.5),
        WatchOptions(flush_s=0.1, progress_s=0.5, live=LiveOptions(unseen_s=0.5, speed=speed, backoff_s=0.1)),
        **kwargs,
    )


def test_a_file_camera_gives_every_walker_a_track_with_receive_times(street, tmp_path, caplog):
    appended = []
    with caplog.at_level(logging.INFO, logger="ssan"):
        counts = watcher(
            street,
            tmp_path / "idx",
            [Camera("street", str(street["video"]))],
            on_append=lambda e, t: appended.append(e),
        ).run(threading.Event())
    index = GalleryIndex.load(tmp_path / "idx")
    assert counts == {"street": len(index)} and len(index) >= 5
    assert {e["camera"] for e in index.entries} == {"street"} and {e["source_kind"] for e in index.entries} == {
        "stream"
    }
    assert all(e["utc_start"] <= e["utc_end"] for e in index.entries)
    [source] = index.meta["sources"]
    assert source["time_source"] == "receive" and source["url"] == str(street["video"].resolve())
    assert "street: " in caplog.text and "tracks indexed" in caplog.text and "reconnects" in caplog.text
    assert Searcher(tmp_path / "idx").search("a man", k=3)["results"][0]["time_base"] == "utc"
    with pytest.raises(VideoError, match="from a live stream: no frame was kept"):  # never reopens the camera
        track_frame(index.entries[0])


def test_restart_does_not_read_a_file_again_and_a_dead_stream_is_retried_while_others_go_on(street, tmp_path, caplog):
    out = tmp_path / "idx"
    watcher(street, out, [Camera("street", str(street["video"]))]).run(threading.Event())
    before = len(GalleryIndex.load(out))
    dead = Camera("dead", "tcp://127.0.0.1:9/nothing")  # nothing listens on the discard port
    other = shutil.copy(street["video"], tmp_path / "other.mp4")
    run = watcher(street, out, [Camera("street", str(street["video"])), dead, Camera("other", str(other))])
    assert [w.name for w in run.workers] == ["dead", "other"]  # street.mp4 is in the index already
    stop = threading.Event()
    thread = threading.Thread(target=run.run, args=(stop,))
    with caplog.at_level(logging.INFO, logger="ssan"):
        thread.start()
        deadline = time.monotonic() + 60
        while run.workers[1].thread.is_alive() or not run.workers[1].thread.ident:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        thread.join(timeout=60)
    cameras = [e["camera"] for e in GalleryIndex.load(out).entries]
    assert cameras.count("street") == before and cameras.count("other") >= 5
    assert run.workers[0].reconnects >= 2 and "camera dead: cannot open" in caplog.text
    assert "already in the index (or forgotten): not read again" in caplog.text


def test_tracks_are_appended_while_a_searcher_serves_the_index(street, tmp_path):
    out = tmp_path / "idx"
    watcher(street, out, [Camera("first", str(street["video"]))]).run(threading.Event())
    searcher = Searcher(out)
    assert {r["camera"] for r in searcher.search("a man", k=50)["results"]} == {"first"}
    second = shutil.copy(street["video"], tmp_path / "second.mp4")
    watcher(street, out, [Camera("second", str(second))]).run(threading.Event())
    assert {r["camera"] for r in searcher.search("a man", k=50)["results"]} == {"first", "second"}


def _watch_command(street, out, *extra) -> list:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from footage import register_gt; from pathlib import Path; "
        "register_gt(Path(sys.argv[2])); from ssan.cli import main; sys.exit(main(sys.argv[3:]))"
    )
    return [sys.executable, "-c", code, str(TESTS), str(street["scene"]), "watch", "--checkpoint",
            str(street["checkpoint"]), "--out", str(out), "--detector", "street-truth", "--fps", str(FPS),
            "--unseen", "0.5", "--progress-every", "1", *extra]  # fmt: skip


@pytest.mark.slow
def test_sigterm_indexes_the_open_tracks_and_exits_0(street, tmp_path):
    out = tmp_path / "idx"
    cmd = _watch_command(street, out, "--source", f"street={street['video']}", "--speed", "1")
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        assert "watching 1 camera(s)" in process.stdout.readline()
        time.sleep(3.5)  # about half the 6 s video played: walkers are in view
        process.send_signal(signal.SIGTERM)
        out_text, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    entries = GalleryIndex.load(out).entries
    assert entries and "indexed street:" in out_text
    truth_ends = sorted(p["end"] for p in street["people"].values())
    assert max(e["end"] for e in entries) < truth_ends[-1]  # stopped early: the open tracks were cut, and kept


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS.parent / "src"), env.get("PYTHONPATH", "")])
    return env


def _rtsp_tools() -> str:
    missing = [tool for tool in ("ffmpeg", "rtsp-server-perl") if shutil.which(tool) is None]
    return f"needs {' and '.join(missing)} (apt-get install -y ffmpeg rtsp-server-perl)" if missing else ""


@pytest.mark.slow
@pytest.mark.skipif(bool(_rtsp_tools()), reason=_rtsp_tools() or "tools present")
def test_a_real_rtsp_camera(street, tmp_path):
    """ffmpeg pushes the street video (looped, real time) to rtsp-server-perl; watch reads it over RTSP/UDP."""
    with rtsp_camera(street["video"]) as url:
        appended = []
        run = watcher(
            street, tmp_path / "idx", [Camera("cam1", url)], speed=1, on_append=lambda e, t: appended.append(e)
        )
        stop = threading.Event()
        thread = threading.Thread(target=run.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 60
        while sum(len(batch) for batch in appended) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join(timeout=60)
    entries = GalleryIndex.load(tmp_path / "idx").entries
    assert len(entries) >= 5 and run.workers[0].frames > 20
    assert all(e["video"].startswith(f"{url}#") for e in entries)
