"""`ssan index --video --ray`: joined segments give the tracks of one process; a killed actor costs nothing."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import numpy as np
import pytest

from helpers import run_cli, save_random_checkpoint
from ssan.search.index import GalleryIndex

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray", reason="the Ray tests need Ray Data (the ray extra)")

FIELDS = ("camera", "video", "track", "start", "end", "first_frame", "last_frame", "frames", "times", "boxes")


SEGMENTS = ["--segment-seconds", "5", "--segment-overlap", "2"]  # 14 s: segments 0-7, 5-12, 10-14 s


@pytest.fixture(scope="module")
def footage(prepared_synth, tmp_path_factory):
    """Two 14 s videos (6 walkers, several crossing segment boundaries) with their MOT boxes, a random model."""
    from ssan.video import generate_synthetic_video

    base = tmp_path_factory.mktemp("ray")
    generate_synthetic_video(base / "scene", seconds=14, people=6, fps=10, size=(144, 256), seed=1, progress=False)
    (base / "det").mkdir()
    for camera in ("gate", "yard"):
        shutil.copy(base / "scene" / "video.mp4", base / f"{camera}.mp4")
        shutil.copy(base / "scene" / "gt" / "gt.txt", base / "det" / f"{camera}.txt")
    checkpoint = save_random_checkpoint(base / "model.pt", prepared_synth)
    args = ["index", "--checkpoint", checkpoint, "--video", base / "gate.mp4", base / "yard.mp4", "--fps", "5"]
    args += ["--detections", base / "det", "--crops-per-track", "2", "--no-progress", "--keep-ids"]
    code, _, err = run_cli(*args, "--out", base / "plain")
    assert code == 0, err
    return {"base": base, "args": args, "plain": GalleryIndex.load(base / "plain")}


def _same(index: GalleryIndex, plain: GalleryIndex) -> None:
    assert [[e[f] for f in FIELDS] for e in index.entries] == [[e[f] for f in FIELDS] for e in plain.entries]
    np.testing.assert_allclose(np.asarray(index.features), np.asarray(plain.features), atol=1e-5)


def test_ray_gives_the_tracks_of_one_process(footage):
    code, out, err = run_cli(*footage["args"], "--out", footage["base"] / "ray", "--ray", *SEGMENTS)
    assert code == 0, err
    index = GalleryIndex.load(footage["base"] / "ray")
    _same(index, footage["plain"])
    crossing = [e for e in footage["plain"].entries if e["start"] < 5 <= e["end"] or e["start"] < 10 <= e["end"]]
    assert len(crossing) >= 4  # tracks that the segment boundaries cut, joined again
    assert sorted(p.name for p in (footage["base"] / "ray" / "crops").iterdir()) == sorted(
        p.name for p in (footage["base"] / "plain" / "crops").iterdir()
    )


def _title(process) -> str:
    try:
        return " ".join(process.cmdline())
    except Exception:  # gone meanwhile
        return ""


def test_an_actor_killed_mid_job_is_replaced_and_no_track_is_lost_or_doubled(footage):
    import psutil

    from ssan.video import IngestOptions, build_track_index

    base = footage["base"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        done = {}
        job = threading.Thread(
            target=lambda: done.update(
                index=build_track_index(
                    base / "killed", base / "model.pt", [base / "gate.mp4", base / "yard.mp4"],
                    detections=base / "det", options=IngestOptions(fps=5, keep=2, keep_ids=True), progress=False,
                    ray="local", segment_seconds=5, segment_overlap=2,
                )
            )
        )  # fmt: skip
        job.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and job.is_alive():
            workers = [p.pid for p in psutil.Process().children(recursive=True) if "SegmentWorker" in _title(p)]
            if workers:  # a process this test started (the cluster is its child)
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        job.join(timeout=300)
        assert killed is not None, "the job ended before its actor could be killed"
        _same(done["index"], footage["plain"])
    finally:
        ray.shutdown()


@pytest.mark.parametrize("start, end", [(0, 5.2), (4.0, 6.0), (5, 12), (6.1, None), (13.5, None)])
def test_a_segment_decodes_the_sampled_frames_of_the_whole_file(footage, start, end):
    """Seeking to the key frame before the start (every 2 s here) keeps the whole file's sampling grid and numbers."""
    from ssan.video.video_file import VideoReader

    with VideoReader(footage["base"] / "gate.mp4") as reader:
        whole = [
            (f.number, f.time, f.image) for f in reader.frames(3) if f.time >= start and (end is None or f.time < end)
        ]
    with VideoReader(footage["base"] / "gate.mp4") as reader:
        part = [(f.number, f.time, f.image) for f in reader.frames_between(3, start, end)]
    assert [(n, t) for n, t, _ in part] == [(n, t) for n, t, _ in whole] and part
    assert all(np.array_equal(a, b) for (_, _, a), (_, _, b) in zip(part, whole))


def test_segments_are_checked_and_planned():
    from ssan.video.segments import Segment, plan_segments

    assert plan_segments(14, 5, 2) == [Segment(0, 0.0, 7, 0.0), Segment(1, 5, 12, 7), Segment(2, 10, None, 12)]
    assert plan_segments(None, 5, 2) == [Segment(0, 0.0, None, 0.0)]
    for seconds, overlap in ((5, 5), (0, 1), (5, 0)):
        args = ["index", "--checkpoint", "m.pt", "--video", "x.mp4", "--out", "o", "--detections", "d.txt", "--ray"]
        code, _, err = run_cli(*args, "--segment-seconds", str(seconds), "--segment-overlap", str(overlap))
        assert code == 2 and "--segment-overlap must be positive" in err and "Traceback" not in err
