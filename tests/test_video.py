"""Footage: the synthetic street video, MOT files, tracking, the track index and track search."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli, save_random_checkpoint
from ssan.search import Searcher
from ssan.video import IngestOptions, build_track_index, generate_synthetic_video, read_mot
from ssan.video.aggregate import max_over_crops, mean_of_normalised
from ssan.video.errors import DetectionsError
from ssan.video.video_file import VideoReader

FPS = 10


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A 6 s, 144x256 street scene with 5 walkers (seed 3 has a colour-swapped pair)."""
    out = tmp_path_factory.mktemp("scene") / "street"
    generate_synthetic_video(out, seconds=6, people=5, fps=FPS, size=(144, 256), seed=3, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", prepared_synth, seed=0)


@pytest.fixture(scope="module")
def footage_checkpoint(tmp_path_factory):
    """A small SSAN trained on 200 synthetic identities for 6 epochs (about 30 s): it can tell walkers apart."""
    root = tmp_path_factory.mktemp("footage-model")
    assert run_cli("synth", root / "synth", "--ids", 200, "--size", "64x32", "--seed", 5)[0] == 0
    assert run_cli("prepare", "--dataset", "cuhk-pedes", "--root", root / "synth", "--out", root / "prep")[0] == 0
    settings = [
        "data.batch_size=32",
        "data.num_workers=0",
        "model.embed_dim=64",
        "model.word_dim=32",
        "model.hidden_dim=64",
        "model.cnn_width=12",
        "optim.epochs=6",
        "optim.milestones=[100]",
        "optim.lr=3e-3",
        "optim.backbone_lr=3e-3",
        "train.eval_every=6",
    ]
    code, out, err = run_cli(
        "train",
        "--config",
        "synth",
        "--data",
        root / "prep",
        "--output",
        root / "run",
        "--device",
        "cpu",
        *[a for s in settings for a in ("--set", s)],
    )
    assert code == 0, err
    return root / "run" / "checkpoints" / "last.pt"


def gt_rows(scene: Path) -> dict:
    """{id: {frame: (x, y, w, h)}} from the scene's ground truth."""
    rows: dict = {}
    for line in (scene / "gt" / "gt.txt").read_text().split():
        frame, track, x, y, w, h = (int(float(v)) for v in line.split(",")[:6])
        rows.setdefault(track, {})[frame] = (x, y, w, h)
    return rows


def test_synth_video_writes_video_ground_truth_and_captions(scene):
    people = json.loads((scene / "people.json").read_text())
    truth = gt_rows(scene)
    assert set(truth) == {int(k) for k in people["people"]} == set(range(1, 6))
    assert people["twin_pairs"] >= 1
    twins = {int(k): p["twin"] for k, p in people["people"].items() if p["twin"] is not None}
    for a, b in twins.items():
        pa, pb = people["people"][str(a)]["attributes"], people["people"][str(b)]["attributes"]
        assert (pa["upper_colour"], pa["lower_colour"]) == (pb["lower_colour"], pb["upper_colour"])
    with VideoReader(scene / "video.mp4") as reader:
        frames = list(reader.frames(FPS))
        assert (reader.width, reader.height, reader.rate) == (256, 144, FPS)
    assert len(frames) == 60 and [f.number for f in frames] == list(range(1, 61))
    for track, seen in truth.items():
        person = people["people"][str(track)]
        assert person["start"] == (min(seen) - 1) / FPS and person["end"] == (max(seen) - 1) / FPS
        assert len(person["captions"]) == 3 and all(person["captions"])
        first, last = seen[min(seen)], seen[max(seen)]
        assert first[0] == 0 or first[0] + first[2] == 256  # enters through a side edge
        assert last[0] == 0 or last[0] + last[2] == 256  # and leaves through one
        for x, y, w, h in seen.values():
            assert 0 <= x and x + w <= 256 and 0 <= y and y + h <= 144 and w >= 2 and h >= 2


def test_synth_video_is_reproducible_and_draws_the_walkers_where_the_boxes_are(scene, tmp_path):
    again = tmp_path / "again"
    generate_synthetic_video(again, seconds=6, people=5, fps=FPS, size=(144, 256), seed=3, progress=False)
    assert (again / "gt" / "gt.txt").read_text() == (scene / "gt" / "gt.txt").read_text()
    assert (again / "people.json").read_text() == (scene / "people.json").read_text()
    truth = gt_rows(scene)
    with VideoReader(scene / "video.mp4") as reader:
        frames = {f.number: f.image.astype(np.int16) for f in reader.frames(FPS)}
    empty = min(frames, key=lambda n: sum(n in seen for seen in truth.values()))
    track, seen = max(truth.items(), key=lambda item: len(item[1]))
    number = sorted(seen)[len(seen) // 2]
    x, y, w, h = seen[number]
    inside = np.abs(frames[number] - frames[empty])[y : y + h, x : x + w].mean()
    assert inside > 10  # the walker is drawn inside its box


def test_index_from_ground_truth_times_and_boxes_match_it(scene, checkpoint, tmp_path):
    index = build_track_index(
        tmp_path / "idx",
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=FPS, keep_ids=True, keep=4),
        progress=False,
    )
    truth = gt_rows(scene)
    assert sorted(e["track"] for e in index.entries) == sorted(truth)
    for entry in index.entries:
        seen = truth[entry["track"]]
        assert entry["start"] == pytest.approx((min(seen) - 1) / FPS) and entry["end"] == pytest.approx(
            (max(seen) - 1) / FPS
        )
        assert (entry["first_frame"], entry["last_frame"], entry["boxes_seen"]) == (min(seen), max(seen), len(seen))
        assert len(entry["frames"]) == len(entry["boxes"]) == 4
        for frame, box, time in zip(entry["frames"], entry["boxes"], entry["times"]):
            assert tuple(box) == seen[frame] and time == pytest.approx((frame - 1) / FPS)
        assert entry["camera"] == "video" and Path(entry["path"]).is_file()
    assert index.meta["content"] == "tracks" and index.meta["aggregation"] == "mean-of-normalised"


@pytest.mark.slow
def test_a_persons_caption_finds_its_own_track_first(footage_checkpoint, tmp_path):
    hits, ranks = [], []
    for seed in (0, 1):
        out = tmp_path / f"scene{seed}"
        assert (
            run_cli(
                "synth-video", out, "--seconds", 6, "--people", 5, "--size", "144x256", "--seed", seed, "--no-progress"
            )[0]
            == 0
        )
        code, _, err = run_cli(
            "index",
            "--checkpoint",
            footage_checkpoint,
            "--video",
            out / "video.mp4",
            "--detections",
            out / "gt" / "gt.txt",
            "--out",
            out / "idx",
            "--no-progress",
        )
        assert code == 0, err
        searcher = Searcher(out / "idx")
        for track, person in json.loads((out / "people.json").read_text())["people"].items():
            for caption in person["captions"]:
                order = [r for r in searcher.search(caption, k=5)["results"]]
                owners = [_owner(r, gt_rows(out)) for r in order]
                ranks.append(owners.index(int(track)) + 1 if int(track) in owners else 6)
                hits.append(owners[0] == int(track))
    # 5 walkers: a model that cannot tell them apart ranks the right one first 20% of the time
    assert np.mean(hits) >= 0.45, f"own track first for {np.mean(hits):.0%} of {len(hits)} captions, ranks {ranks}"


def _owner(result: dict, truth: dict) -> int:
    """The walker whose ground-truth boxes the track's kept boxes are (ByteTrack ids are its own)."""
    votes = [
        t for f, b in zip(result["frames"], result["boxes"]) for t, seen in truth.items() if seen.get(f) == tuple(b)
    ]
    return max(set(votes), key=votes.count) if votes else -1


def test_sampling_rate_keeps_every_other_frame(scene, checkpoint, tmp_path):
    index = build_track_index(
        tmp_path / "idx",
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=5, keep_ids=True),
        camera="cam3",
        progress=False,
    )
    assert index.meta["sources"][0]["frames"] == 30
    assert all(f % 2 == 1 for e in index.entries for f in e["frames"]) and index.entries[0]["camera"] == "cam3"


def test_bytetrack_follows_mot_boxes_without_ids(scene, checkpoint, tmp_path):
    lines = []
    for line in (scene / "gt" / "gt.txt").read_text().split():
        values = line.split(",")
        lines.append(",".join([values[0], "-1", *values[2:6], "0.9", "-1", "-1", "-1"]))
    det = tmp_path / "det.txt"
    det.write_text("\n".join(lines) + "\n")
    assert not read_mot(det).has_ids
    index = build_track_index(
        tmp_path / "idx",
        checkpoint,
        [scene / "video.mp4"],
        detections=det,
        options=IngestOptions(fps=FPS, min_score=0.5),
        progress=False,
    )
    truth = gt_rows(scene)
    covered = set()
    for entry in index.entries:  # each track follows one walker: its boxes are that walker's boxes
        owners = [
            t for f, b in zip(entry["frames"], entry["boxes"]) for t, seen in truth.items() if seen.get(f) == tuple(b)
        ]
        assert len(owners) == len(entry["frames"]) and len(set(owners)) == 1
        covered.add(owners[0])
    assert covered == set(truth) and len(index.entries) <= 2 * len(truth)


def test_keep_ids_refuses_a_file_without_ids(scene, checkpoint, tmp_path):
    det = tmp_path / "det.txt"
    det.write_text("1,-1,10,10,20,40,1\n2,-1,11,10,20,40,1\n")
    code, out, err = run_cli(
        "index",
        "--checkpoint",
        checkpoint,
        "--video",
        scene / "video.mp4",
        "--detections",
        det,
        "--keep-ids",
        "--out",
        tmp_path / "idx",
        "--no-progress",
    )
    assert code == 2 and "no track ids" in err and "Traceback" not in err


def test_add_encodes_only_new_sources(scene, checkpoint, tmp_path, monkeypatch):
    import ssan.video.track_index as track_index

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("cam1", "cam2"):
        (videos / f"{name}.mp4").write_bytes((scene / "video.mp4").read_bytes())
        (videos / f"{name}.txt").write_text((scene / "gt" / "gt.txt").read_text())
    options = IngestOptions(fps=FPS, keep_ids=True)
    first = build_track_index(
        tmp_path / "idx", checkpoint, [videos / "cam1.mp4"], detections=videos, options=options, progress=False
    )
    ingested = []
    original = track_index.SourceIngest

    def spying(source, *args, **kwargs):
        ingested.append(Path(source.path).name)
        return original(source, *args, **kwargs)

    monkeypatch.setattr(track_index, "SourceIngest", spying)
    both = build_track_index(
        tmp_path / "idx", checkpoint, [videos], detections=videos, options=options, add=True, progress=False
    )
    assert ingested == ["cam2.mp4"]
    assert len(both) == 2 * len(first) and both.entries[: len(first)] == first.entries
    assert np.array_equal(np.asarray(both.features)[: len(first)], np.asarray(first.features))
    assert sorted({e["camera"] for e in both.entries}) == ["cam1", "cam2"]
    ingested.clear()
    build_track_index(
        tmp_path / "idx", checkpoint, [videos], detections=videos, options=options, add=True, progress=False
    )
    assert ingested == []


def test_search_prints_track_lines_json_fields_and_a_sheet(scene, checkpoint, tmp_path):
    build_track_index(
        tmp_path / "idx",
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=FPS, keep_ids=True),
        camera="cam3",
        progress=False,
    )
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man in a red jacket", "-k", "3")
    assert code == 0, err
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:4] == ["rank", "score", "camera", "time"])
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(r[2] == "cam3" and r[5] == "video.mp4" for r in rows)
    assert all(r[3].count(":") == 4 and "-" in r[3] for r in rows)
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "a man in a red jacket", "-k", "2", "--json")
    result = json.loads(out)["results"][0]
    assert {"track", "camera", "start", "end", "offset_start", "offset_end", "frames", "boxes", "score"} <= set(result)
    assert result["time_base"] == "offset" and result["start"] == result["offset_start"]  # no wall-clock start
    sheet = tmp_path / "sheet.png"
    code, out, err = run_cli(
        "search", "--index", tmp_path / "idx", "a man in a red jacket", "-k", "2", "--sheet", sheet
    )
    assert code == 0 and sheet.stat().st_size > 10_000 and "no frame" not in err


def test_searcher_resolves_the_video_and_the_frame_of_a_track(scene, checkpoint, tmp_path):
    from ssan.video import track_frame

    build_track_index(
        tmp_path / "idx",
        checkpoint,
        [scene / "video.mp4"],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=FPS, keep_ids=True),
        progress=False,
    )
    searcher = Searcher(tmp_path / "idx")
    hit = searcher.search("a woman in a blue coat", k=1)["results"][0]
    assert searcher.video_file(hit["image_id"]) == (scene / "video.mp4").resolve()
    assert searcher.video_file(10_000) is None and searcher.describe()["tracks"] is True
    frame, box = track_frame(hit)
    with VideoReader(scene / "video.mp4") as reader:
        expected = next(f.image for f in reader.frames(FPS) if f.number == hit["frames"][0])
    assert frame.shape == (144, 256, 3) and np.array_equal(frame, expected)
    assert box == tuple(hit["boxes"][0])


def test_video_file_refuses_a_file_swapped_for_a_link(scene, checkpoint, tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes((scene / "video.mp4").read_bytes())
    build_track_index(
        tmp_path / "idx",
        checkpoint,
        [video],
        detections=scene / "gt" / "gt.txt",
        options=IngestOptions(fps=FPS, keep_ids=True),
        progress=False,
    )
    searcher = Searcher(tmp_path / "idx")
    assert searcher.video_file(0) == video.resolve()
    other = tmp_path / "elsewhere.mp4"
    other.write_bytes(b"another file")
    video.unlink()
    assert searcher.video_file(0) is None  # gone
    video.symlink_to(other)
    assert searcher.video_file(0) is None  # now leads elsewhere


def test_mean_of_normalised_is_normalised_per_term_and_max_over_crops_matches_a_loop():
    rng = np.random.default_rng(0)
    widths = [4, 6]
    crops = rng.normal(size=(5, 10))
    track = mean_of_normalised(crops, widths)
    assert np.linalg.norm(track[:4]) == pytest.approx(1, abs=1e-6)
    assert np.linalg.norm(track[4:]) == pytest.approx(1, abs=1e-6)
    assert np.allclose(track[:4], crops[:, :4].mean(0) / np.linalg.norm(crops[:, :4].mean(0)), atol=1e-6)
    scores = rng.normal(size=(3, 7))
    owners = np.array([0, 2, 2, 1, 0, 2, 1])
    expected = np.array([[scores[q, owners == t].max() for t in range(3)] for q in range(3)])
    assert np.allclose(max_over_crops(scores, owners, 3), expected)


def test_mot_reader_names_malformed_lines_and_clips_boxes(tmp_path, caplog):
    from ssan.video.mot import fit_to_frame

    bad = tmp_path / "bad.txt"
    bad.write_text("1,1,10,10,20,40,1\n# a comment\n\n2,1,10,10\n3,x,1,1,5,5,1\n0,1,1,1,5,5,1\n4,1,1,1,-5,5,1\n")
    with pytest.raises(DetectionsError) as info:
        read_mot(bad)
    message = str(info.value)
    assert "4 malformed" in message and "line 4" in message and "line 5" in message and "line 6" in message
    good = tmp_path / "good.txt"
    good.write_text(
        "1,1,-10,5,30,40,1\n1,2,500,5,30,40,1\n2,3,10,10,20,40,1,3,1\n2,4,10,10,20,40,0,1,1\n2,5,10,10,20,40,1,1,0.25\n"
    )
    mot = read_mot(good)
    assert mot.has_ids and len(mot) == 3 and mot.dropped == 2  # a car (class 3) and an "ignore" line
    with caplog.at_level(logging.WARNING):
        assert fit_to_frame(mot, width=256, height=144) == {"clipped": 1, "dropped": 1}
    assert "clipped" in caplog.text and "dropped" in caplog.text
    assert mot.frames[1].tolist()[0][:5] == [1, 0, 5, 20, 40]
    assert mot.frames[2][0, 6] == 0.25


@pytest.mark.slow
def test_demo_footage_searches_a_street_video_with_the_demo_model(prepared_synth, tmp_path):
    out = tmp_path / "demo"
    (out / "run" / "checkpoints").mkdir(parents=True)
    save_random_checkpoint(out / "run" / "checkpoints" / "best.pt", prepared_synth)
    (out / "metrics.json").write_text("{}")  # a finished demo: the footage part reuses its model
    code, stdout, err = run_cli("demo", "--output", out, "--footage")
    assert code == 0, err
    metrics = json.loads((out / "footage.json").read_text())
    assert metrics["walkers"] == 12 and len(metrics["queries"]) == 12 and metrics["tracks"] >= 12
    assert f"of 12 walkers ranks its own track first ({metrics['own_track_first_pct']:.1f}%)" in stdout
    assert (out / "footage.png").stat().st_size > 20_000 and (out / "footage" / "gt" / "gt.txt").is_file()
