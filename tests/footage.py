"""Helpers for the tests of served footage (not a test file): a tiny track index of a video and of frames."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Optional

FPS = 10
SIZE = (144, 256)  # height, width


def write_frames(video: Path, folder: Path) -> int:
    """Decode ``video`` into ``folder/img1/000001.jpg ...`` and a ``seqinfo.ini``; returns the frame count."""
    from PIL import Image

    from ssan.video.video_file import VideoReader

    (folder / "img1").mkdir(parents=True)
    with VideoReader(video) as reader:
        count = 0
        for frame in reader.frames(FPS):
            Image.fromarray(frame.image).save(folder / "img1" / f"{frame.number:06d}.jpg", quality=92)
            count += 1
    (folder / "seqinfo.ini").write_text(f"[Sequence]\nframeRate={FPS}\nseqLength={count}\n")
    return count


def remux_with_creation_time(source: Path, out: Path, when: str) -> Path:
    """A copy of ``source`` whose container states ``creation_time`` (PyAV, no re-encoding)."""
    import av

    with av.open(str(source)) as given, av.open(str(out), "w") as copy:
        copy.metadata["creation_time"] = when
        stream = copy.add_stream_from_template(given.streams.video[0])
        for packet in given.demux(given.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                copy.mux(packet)
    return out


def build_footage_index(base: Path, prepared_dir: Path, creation_time: Optional[str] = None) -> dict:
    """A 6 s, 256x144 synthetic street scene with 5 walkers (seed 0: one enters at 1.9 s), indexed
    twice over: as the video ``street.mp4`` (camera ``street``) and as a folder of its frames
    (camera ``lobby``), with the ground-truth boxes and ids and a random tiny model. With
    ``creation_time`` the video's container states it (its tracks get wall-clock times; the
    folder of frames keeps offsets only).

    Returns ``{"index", "video", "frames", "checkpoint", "people"}`` (paths; ``people`` is people.json).
    """
    from helpers import save_random_checkpoint
    from ssan.video import IngestOptions, build_track_index, generate_synthetic_video

    scene = base / "scene"
    generate_synthetic_video(scene, seconds=6, people=5, fps=FPS, size=SIZE, seed=0, progress=False)
    footage, detections = base / "footage", base / "detections"
    footage.mkdir()
    detections.mkdir()
    if creation_time is None:
        video = shutil.copy(scene / "video.mp4", footage / "street.mp4")
    else:
        video = remux_with_creation_time(scene / "video.mp4", footage / "street.mp4", creation_time)
    write_frames(scene / "video.mp4", footage / "lobby")
    for name in ("street", "lobby"):
        shutil.copy(scene / "gt" / "gt.txt", detections / f"{name}.txt")
    checkpoint = save_random_checkpoint(base / "model.pt", prepared_dir)
    build_track_index(
        base / "idx",
        checkpoint,
        [footage / "street.mp4", footage / "lobby"],
        detections=detections,
        options=IngestOptions(fps=FPS, keep_ids=True, keep=4),
        progress=False,
    )
    return {
        "index": base / "idx",
        "video": Path(video),
        "frames": footage / "lobby",
        "checkpoint": checkpoint,
        "people": scene / "people.json",
    }


def build_two_cameras(base: Path, prepared_dir: Path) -> Path:
    """One 4 s street video (3 walkers) indexed as two cameras with wall-clock times: ``gate`` from
    2026-12-01T08:00:00Z and ``yard`` from 09:00:00Z (tracks 0-2 and 3-5, identical vectors per pair)."""
    from helpers import save_random_checkpoint
    from ssan.video import IngestOptions, build_track_index, generate_synthetic_video

    generate_synthetic_video(base / "scene", seconds=4, people=3, fps=FPS, size=SIZE, seed=1, progress=False)
    checkpoint = save_random_checkpoint(base / "model.pt", prepared_dir)
    for camera, start in (("gate", "2026-12-01T08:00:00Z"), ("yard", "2026-12-01T09:00:00Z")):
        video = shutil.copy(base / "scene" / "video.mp4", base / f"{camera}.mp4")
        build_track_index(
            base / "idx",
            checkpoint,
            [video],
            detections=base / "scene" / "gt" / "gt.txt",
            options=IngestOptions(fps=FPS, keep_ids=True, keep=2),
            start_time=start,
            add=camera == "yard",
            progress=False,
        )
    return base / "idx"


class GroundTruthDetector:
    """A person "detector" for the synthetic street video: it recognises which frame of the video it is
    shown (the nearest 32x18 thumbnail, so it works on a stream joined at any moment or looped) and
    returns that frame's ground-truth boxes. Registered through the public registry by :func:`register_gt`."""

    def __init__(self, scene: Path):
        import numpy as np
        from PIL import Image

        from ssan.video.mot import read_mot
        from ssan.video.video_file import VideoReader

        thumbs = []
        with VideoReader(scene / "video.mp4") as reader:
            for frame in reader.frames(reader.rate):
                thumbs.append(np.asarray(Image.fromarray(frame.image).convert("L").resize((32, 18)), np.float32))
        self.thumbs = np.stack(thumbs).reshape(len(thumbs), -1)
        self.boxes = read_mot(scene / "gt" / "gt.txt").frames
        self.calls = 0

    def __call__(self, images):
        import numpy as np
        from PIL import Image

        out = []
        for image in images:
            self.calls += 1
            thumb = np.asarray(Image.fromarray(image).convert("L").resize((32, 18)), np.float32).reshape(-1)
            number = int(np.argmin(((self.thumbs - thumb) ** 2).sum(axis=1))) + 1
            rows = self.boxes.get(number)
            if rows is None:
                out.append((np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
                continue
            xyxy = np.column_stack([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]]).astype(np.float32)
            out.append((xyxy, np.full(len(rows), 0.9, np.float32)))
        return out


def register_gt(scene: Path, name: str = "street-truth"):
    """Register a :class:`GroundTruthDetector` of ``scene`` as detector ``name`` (replacing an earlier one)."""
    from ssan.video import register_detector

    detector = GroundTruthDetector(scene)
    register_detector(name, overwrite=True)(lambda weights, device, min_score: detector)
    return detector


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, deadline: float) -> None:
    import socket
    import time

    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_for_stream(url: str, deadline: float) -> None:
    import time

    import av

    while True:
        try:
            av.open(url, options={"rtsp_transport": "udp"}, timeout=(5, 5)).close()
            return
        except (av.FFmpegError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextlib.contextmanager
def rtsp_camera(video: Path, name: str = "cam1", timeout_s: float = 90.0):
    """An RTSP camera (the recipe of the project's test-servers notes): rtsp-server-perl, and ffmpeg
    pushing ``video`` looped at real time; yields the address readers open (RTP over UDP only)."""
    import subprocess
    import time

    client, source = free_port(), free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    server = subprocess.Popen(
        ["rtsp-server-perl", "--clientport", str(client), "--serverport", str(source),
         "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1"], **quiet,
    )  # fmt: skip
    pusher = None
    try:
        deadline = time.monotonic() + timeout_s
        _wait_for_port(source, deadline)  # ffmpeg gives up at once when nobody listens
        pusher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
             "-c:v", "copy", "-f", "rtsp", f"rtsp://127.0.0.1:{source}/{name}"], **quiet,
        )  # fmt: skip
        url = f"rtsp://127.0.0.1:{client}/{name}"
        _wait_for_stream(url, deadline)
        yield url
    finally:
        for process in (pusher, server):
            if process is not None:
                process.terminate()
                process.wait(timeout=10)
