"""Bad footage and bad detections: one-line errors or per-file warnings, the rest indexed, never a traceback."""

from __future__ import annotations

import logging
import sys
from fractions import Fraction

import numpy as np
import pytest

from helpers import run_cli, save_random_checkpoint
from ssan.errors import SsanError
from ssan.video import IngestOptions, build_track_index, generate_synthetic_video
from ssan.video.video_file import VideoReader

FPS = 10


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "street"
    generate_synthetic_video(out, seconds=6, people=4, fps=FPS, size=(144, 256), seed=5, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", prepared_synth, seed=0)


def index_cli(checkpoint, out, *args):
    return run_cli("index", "--checkpoint", checkpoint, "--out", out, "--no-progress", "--fps", FPS, *args)


def one_line_error(code: int, err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("ssan index: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err


def _unknown_codec_avi(path):
    """An AVI whose video codec tag no decoder knows."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("mpeg4", rate=Fraction(FPS, 1))
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    for index in range(5):
        frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    data = path.read_bytes()
    assert b"FMP4" in data
    path.write_bytes(data.replace(b"FMP4", b"QQQQ"))


@pytest.fixture(scope="module")
def damaged(scene, tmp_path_factory):
    """Broken copies of the scene's video, by name."""
    folder = tmp_path_factory.mktemp("damaged")
    data = (scene / "video.mp4").read_bytes()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(30_000))
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    corrupt = bytearray(data)
    corrupt[len(data) // 3 : len(data) // 3 + 40_000] = bytes(40_000)
    (folder / "corrupt.mp4").write_bytes(bytes(corrupt))
    _unknown_codec_avi(folder / "codec.avi")
    return folder


@pytest.mark.parametrize(
    "name, reason",
    [
        ("empty.mp4", "cannot open"),
        ("garbage.mp4", "cannot open"),
        ("codec.avi", "no decoder"),
        ("missing.mp4", "file not found"),
    ],
)
def test_unreadable_video_alone_is_a_one_line_error(damaged, scene, checkpoint, tmp_path, name, reason):
    code, out, err = index_cli(
        checkpoint, tmp_path / "idx", "--video", damaged / name, "--detections", scene / "gt" / "gt.txt", "--keep-ids"
    )
    one_line_error(code, err)
    assert reason in err and "no track to index" in err


def test_unreadable_videos_are_skipped_and_the_rest_indexed(damaged, scene, checkpoint, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("garbage.mp4", "codec.avi", "empty.mp4"):
        (videos / name).write_bytes((damaged / name).read_bytes())
    (videos / "good.mp4").write_bytes((scene / "video.mp4").read_bytes())
    for stem in ("garbage", "codec", "empty", "good"):
        (videos / f"{stem}.txt").write_text((scene / "gt" / "gt.txt").read_text())
    code, out, err = index_cli(checkpoint, tmp_path / "idx", "--video", videos, "--detections", videos, "--keep-ids")
    assert code == 0 and "Traceback" not in err, err
    assert "4 tracks from 1 source" in out and "skipped 3 source(s)" in out
    for name in ("garbage.mp4", "codec.avi", "empty.mp4"):
        assert name in err


def test_truncated_video_keeps_the_frames_before_the_cut(damaged, scene, checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        index = build_track_index(
            tmp_path / "idx",
            checkpoint,
            [damaged / "truncated.mp4"],
            detections=scene / "gt" / "gt.txt",
            options=IngestOptions(fps=FPS, keep_ids=True),
            progress=False,
        )
    assert "truncated" in caplog.text
    decoded = index.meta["sources"][0]["frames"]
    assert 5 < decoded < 60
    assert all(f <= decoded for e in index.entries for f in e["frames"])


def test_damaged_packets_are_skipped_with_a_warning(damaged, caplog):
    with caplog.at_level(logging.WARNING), VideoReader(damaged / "corrupt.mp4") as reader:
        frames = list(reader.frames(FPS))
    assert 0 < len(frames) < 60 and "damaged" in caplog.text
    assert [f.number for f in frames] == sorted(f.number for f in frames)


def test_malformed_mot_file_is_refused_naming_its_lines(scene, checkpoint, tmp_path):
    det = tmp_path / "det.txt"
    det.write_text("1,1,10,10,20,40,1\n2,1,ten,10,20,40,1\n3,1,10,10\n")
    code, out, err = index_cli(checkpoint, tmp_path / "idx", "--video", scene / "video.mp4", "--detections", det)
    one_line_error(code, err)
    assert "line 2: not all values are numbers" in err and "line 3: expected at least 6" in err


def test_boxes_outside_the_frame_are_clipped_or_dropped(scene, checkpoint, tmp_path, caplog):
    det = tmp_path / "det.txt"
    lines = [f"{n},7,-30,20,60,100,1" for n in range(1, 11)] + ["3,8,900,20,60,100,1", "4,8,10,500,60,100,1"]
    det.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        index = build_track_index(
            tmp_path / "idx",
            checkpoint,
            [scene / "video.mp4"],
            detections=det,
            options=IngestOptions(fps=FPS, keep_ids=True),
            progress=False,
        )
    assert "10 box(es) partly outside the 256x144 frame clipped" in caplog.text and "2 wholly" in caplog.text
    (entry,) = index.entries
    assert entry["track"] == 7 and all(b == [0, 20, 30, 100] for b in entry["boxes"])


@pytest.mark.parametrize("content", ["", "# nothing here\n", "500,1,10,10,20,40,1\n"])
def test_zero_detections_is_a_clear_error(scene, checkpoint, tmp_path, content):
    det = tmp_path / "det.txt"
    det.write_text(content)
    code, out, err = index_cli(checkpoint, tmp_path / "idx", "--video", scene / "video.mp4", "--detections", det)
    one_line_error(code, err)
    assert "no track to index" in err
    assert ("none of its frame numbers" in err) == content.startswith("500")


def test_one_detections_file_for_several_videos_is_refused(scene, checkpoint, tmp_path):
    code, out, err = index_cli(
        checkpoint,
        tmp_path / "idx",
        "--video",
        scene / "video.mp4",
        scene / "video.mp4",
        "--detections",
        scene / "gt" / "gt.txt",
    )
    one_line_error(code, err)
    assert "is one file but 2 sources" in err


def test_folder_of_frames_needs_its_rate_and_then_matches_the_video(scene, checkpoint, tmp_path):
    from PIL import Image

    sequence = tmp_path / "seq"
    (sequence / "img1").mkdir(parents=True)
    with VideoReader(scene / "video.mp4") as reader:
        for frame in reader.frames(FPS):
            Image.fromarray(frame.image).save(sequence / "img1" / f"{frame.number:06d}.png")
    (sequence / "img1" / "000031.png").write_bytes(b"broken")
    code, out, err = index_cli(
        checkpoint, tmp_path / "a", "--video", sequence, "--detections", scene / "gt" / "gt.txt", "--keep-ids"
    )
    one_line_error(code, err)
    assert "--frame-rate" in err
    code, out, err = index_cli(
        checkpoint,
        tmp_path / "b",
        "--video",
        sequence,
        "--detections",
        scene / "gt" / "gt.txt",
        "--keep-ids",
        "--frame-rate",
        FPS,
    )
    assert code == 0 and "skipped 1 unreadable" in err, err
    video = build_track_index(
        tmp_path / "c",
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=FPS, keep_ids=True),
        progress=False,
    )
    from ssan.search import GalleryIndex

    frames = GalleryIndex.load(tmp_path / "b")
    assert [(e["track"], e["start"], e["end"]) for e in frames.entries] == [
        (e["track"], e["start"], e["end"]) for e in video.entries
    ]
    assert frames.entries[0]["camera"] == "seq" and frames.entries[0]["source_kind"] == "frames"


def test_options_that_need_footage_are_refused_without_it(scene, checkpoint, tmp_path):
    code, out, err = run_cli(
        "index", "--checkpoint", checkpoint, "--images", scene, "--out", tmp_path / "i", "--keep-ids"
    )
    assert code == 2 and "--keep-ids only applies to footage" in err


def test_missing_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(SsanError, match=r"pip install 'ssan\[video\]'"):
        VideoReader("anything.mp4")
    monkeypatch.setitem(sys.modules, "trackers", None)
    from ssan.video.tracking import ByteTracker

    with pytest.raises(SsanError, match=r"pip install 'ssan\[video\]'.*--keep-ids"):
        ByteTracker(fps=5)
