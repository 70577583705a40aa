"""`ssan index --video --ray`: the same tracks as one process, and a killed actor costs nothing (real Ray)."""

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


@pytest.fixture(scope="module")
def footage(prepared_synth, tmp_path_factory):
    """Two 4 s videos (3 walkers) with their MOT boxes in a folder, and a random model."""
    from ssan.video import generate_synthetic_video

    base = tmp_path_factory.mktemp("ray")
    generate_synthetic_video(base / "scene", seconds=4, people=3, fps=10, size=(144, 256), seed=1, progress=False)
    (base / "det").mkdir()
    for camera in ("gate", "yard"):
        shutil.copy(base / "scene" / "video.mp4", base / f"{camera}.mp4")
        shutil.copy(base / "scene" / "gt" / "gt.txt", base / "det" / f"{camera}.txt")
    checkpoint = save_random_checkpoint(base / "model.pt", prepared_synth)
    args = ["index", "--checkpoint", checkpoint, "--video", base / "gate.mp4", base / "yard.mp4", "--fps", "10"]
    args += ["--detections", base / "det", "--crops-per-track", "2", "--no-progress"]
    code, _, err = run_cli(*args, "--out", base / "plain")
    assert code == 0, err
    return {"base": base, "args": args, "plain": GalleryIndex.load(base / "plain")}


def _same(index: GalleryIndex, plain: GalleryIndex) -> None:
    assert [[e[f] for f in FIELDS] for e in index.entries] == [[e[f] for f in FIELDS] for e in plain.entries]
    np.testing.assert_allclose(np.asarray(index.features), np.asarray(plain.features), atol=1e-5)


def test_ray_gives_the_tracks_of_one_process(footage):
    code, out, err = run_cli(*footage["args"], "--out", footage["base"] / "ray", "--ray")
    assert code == 0, err
    _same(GalleryIndex.load(footage["base"] / "ray"), footage["plain"])
    assert len(footage["plain"]) == 6


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
                    detections=base / "det", options=IngestOptions(fps=10, keep=2), progress=False, ray="local",
                )
            )
        )  # fmt: skip
        job.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline and job.is_alive():
            workers = [p.pid for p in psutil.Process().children(recursive=True) if "FileWorker" in _title(p)]
            if workers:  # a process this test started (the cluster is its child)
                killed = workers[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        job.join(timeout=300)
        assert killed is not None, "the job ended before its actor could be killed"
        _same(done["index"], footage["plain"])
    finally:
        ray.shutdown()
