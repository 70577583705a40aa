"""Person detectors: the registry, weights from a file, the cache or fetched by torchvision, the detector path.

No test reaches the network: torchvision's fetch (``load_state_dict_from_url``, which its weights API
calls) is replaced by one that fails as an offline machine does, or serves a local file.

The torchvision detector is built with random weights (``weights=None, weights_backbone=None``)
only to run the code path: no quality is claimed. Its classification biases are set so that
"person" wins every anchor, which makes the random network output person boxes (without it,
a random network's best classes are others and the path would stop at "no person").
"""

from __future__ import annotations

import json
import urllib.error

import numpy as np
import pytest
import torch
import torchvision

from helpers import run_cli, save_random_checkpoint
from ssan.video import DETECTORS, IngestOptions, build_detector, build_track_index, generate_synthetic_video
from ssan.video.detectors import register_detector
from ssan.video.errors import DetectorWeightsError

SSD = "ssdlite320_mobilenet_v3_large"
SSD_FILE = "ssdlite320_mobilenet_v3_large_coco-a79551df.pth"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene") / "street"
    generate_synthetic_video(out, seconds=4, people=3, fps=10, size=(144, 256), seed=2, progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", prepared_synth, seed=0)


@pytest.fixture(scope="module")
def random_ssd_weights(tmp_path_factory):
    """A state dict of SSDlite with random weights whose class biases favour "person"."""
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    with torch.no_grad():
        for module in model.head.classification_head.module_list:
            conv = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
            bias = conv.bias.view(-1, 91)
            bias[:, 2:] = -12.0
            bias[:, 1] = 3.0
    path = tmp_path_factory.mktemp("weights") / "ssdlite_random.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def empty_hub(tmp_path):
    """torchvision's cache pointed at an empty folder (restored afterwards)."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


def test_registry_lists_the_torchvision_person_detectors():
    assert {SSD, "fasterrcnn_resnet50_fpn_v2", "fcos_resnet50_fpn", "retinanet_resnet50_fpn_v2"} <= set(DETECTORS)
    with pytest.raises(Exception, match="unknown detector 'yolo'; valid: .*ssdlite320"):
        build_detector("yolo")


def torchvision_fetch(monkeypatch, fetch):
    """Replace what torchvision's ``Weights.get_state_dict`` calls to fetch weights (torch.hub's loader)."""
    import torchvision.models._api

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fetch)


def offline(url, **kwargs):
    raise urllib.error.URLError(OSError(-2, "Name or service not known"))


def test_missing_weights_offline_is_a_clear_one_line_error(empty_hub, scene, checkpoint, tmp_path, monkeypatch):
    torchvision_fetch(monkeypatch, offline)
    with pytest.raises(DetectorWeightsError) as info:
        build_detector(SSD)
    message = str(info.value)
    assert "could not be fetched (URLError: [Errno -2] Name or service not known)" in message and "\n" not in message
    assert SSD_FILE in message and str(empty_hub / SSD_FILE) in message
    assert "https://download.pytorch.org/models/" + SSD_FILE in message and "--detector-weights" in message
    code, out, err = run_cli(
        "index",
        "--checkpoint",
        checkpoint,
        "--video",
        scene / "video.mp4",
        "--detector",
        SSD,
        "--out",
        tmp_path / "idx",
        "--no-progress",
    )
    assert code == 2 and "no weights for detector" in err and "Traceback" not in err
    with pytest.raises(DetectorWeightsError, match="not found"):
        build_detector(SSD, tmp_path / "nowhere.pth")


def test_weights_are_fetched_by_torchvision_with_its_hash_check_then_read_from_the_cache(
    empty_hub, random_ssd_weights, monkeypatch
):
    calls = []

    def fetch(url, **kwargs):  # what torch.hub does once the download passed the hash check
        calls.append((url, kwargs))
        empty_hub.mkdir(parents=True, exist_ok=True)
        (empty_hub / SSD_FILE).write_bytes(random_ssd_weights.read_bytes())
        return torch.load(empty_hub / SSD_FILE, weights_only=True)

    torchvision_fetch(monkeypatch, fetch)
    reference = torch.load(random_ssd_weights, weights_only=True)
    detector = build_detector(SSD)
    assert calls == [("https://download.pytorch.org/models/" + SSD_FILE, {"progress": True, "check_hash": True})]
    assert all(torch.equal(v, reference[k]) for k, v in detector.model.state_dict().items())

    def never(url, **kwargs):
        pytest.fail(f"fetched {url} although it is in the cache")

    torchvision_fetch(monkeypatch, never)
    detector = build_detector(SSD)  # from the cache, no fetch
    assert all(torch.equal(v, reference[k]) for k, v in detector.model.state_dict().items())


def test_a_download_failing_the_hash_check_is_a_one_line_error_and_nothing_is_kept(
    empty_hub, random_ssd_weights, tmp_path, monkeypatch
):
    served = tmp_path / "served"
    served.mkdir()
    (served / SSD_FILE).write_bytes(random_ssd_weights.read_bytes())  # its SHA-256 does not start a79551df
    real = torch.hub.load_state_dict_from_url

    def local(url, **kwargs):  # torch.hub's own download and hash check, from a file:// address
        assert kwargs["check_hash"] is True
        return real((served / SSD_FILE).as_uri(), **kwargs)

    torchvision_fetch(monkeypatch, local)
    with pytest.raises(DetectorWeightsError) as info:
        build_detector(SSD)
    message = str(info.value)
    assert "were refused (RuntimeError: invalid hash value" in message and "\n" not in message
    assert str(empty_hub / SSD_FILE) in message and list(empty_hub.iterdir()) == []


def test_weights_are_read_from_the_cache_and_checked(empty_hub, random_ssd_weights, tmp_path):
    empty_hub.mkdir(parents=True)
    (empty_hub / SSD_FILE).write_bytes(random_ssd_weights.read_bytes())
    detector = build_detector(SSD)
    reference = torch.load(random_ssd_weights, weights_only=True)
    assert all(torch.equal(v, reference[k]) for k, v in detector.model.state_dict().items())
    renamed = {("other." + k if i % 7 == 0 else k): v for i, (k, v) in enumerate(reference.items())}
    torch.save(renamed, tmp_path / "other.pth")
    with pytest.raises(DetectorWeightsError, match="do not fit detector ssdlite320.*missing .*unexpected other"):
        build_detector(SSD, tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DetectorWeightsError, match="cannot read weights"):
        build_detector(SSD, tmp_path / "junk.pth")


def test_detector_boxes_are_people_above_the_score_inside_the_frame(random_ssd_weights):
    detector = build_detector(SSD, random_ssd_weights, min_score=0.5)
    frames = [np.full((144, 256, 3), 90, np.uint8), np.random.default_rng(0).integers(0, 255, (144, 256, 3), np.uint8)]
    results = detector(frames)
    assert len(results) == 2
    for boxes, scores in results:
        assert boxes.shape[1] == 4 and len(boxes) == len(scores) > 0 and (scores >= 0.5).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 256).all() and (boxes[:, 3] <= 144).all()


@pytest.mark.slow
def test_detector_path_indexes_tracks_with_random_weights(scene, checkpoint, random_ssd_weights, tmp_path):
    code, out, err = run_cli(
        "index",
        "--checkpoint",
        checkpoint,
        "--video",
        scene / "video.mp4",
        "--detector",
        SSD,
        "--detector-weights",
        random_ssd_weights,
        "--min-score",
        "0.5",
        "--fps",
        "2",
        "--crops-per-track",
        "1",
        "--out",
        tmp_path / "idx",
        "--no-progress",
    )
    assert code == 0, err
    from ssan.search import GalleryIndex

    index = GalleryIndex.load(tmp_path / "idx")
    assert index.meta["sources"][0]["frames"] == 8 and len(index) > 0
    for entry in index.entries:
        x, y, w, h = entry["boxes"][0]
        assert 0 <= x and x + w <= 256.01 and 0 <= y and y + h <= 144.01
    assert index.meta["video"]["min_score"] == 0.5


def test_a_registered_detector_is_a_cli_choice_and_its_boxes_are_tracked(scene, checkpoint, tmp_path):
    truth: dict = {}
    for line in (scene / "gt" / "gt.txt").read_text().split():
        frame, _, x, y, w, h = (float(v) for v in line.split(",")[:6])
        truth.setdefault(int(frame), []).append([x, y, x + w, y + h])
    calls = []

    class GroundTruthDetector:  # stands in for a user's own detector: returns the true boxes
        def __init__(self):
            self.frame = 0

        def __call__(self, images):
            out = []
            for _ in images:
                self.frame += 1
                boxes = np.asarray(truth.get(self.frame, []), np.float32).reshape(-1, 4)
                out.append((boxes, np.full(len(boxes), 0.9, np.float32)))
            calls.append(len(images))
            return out

    @register_detector("ground-truth")
    def ground_truth(weights, device, min_score):
        return GroundTruthDetector()

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_detector("ground-truth")(ground_truth)
        index = build_track_index(
            tmp_path / "idx",
            checkpoint,
            [scene / "video.mp4"],
            detector="ground-truth",
            options=IngestOptions(fps=10),
            progress=False,
        )
        assert sum(calls) == 40
        assert len(index) == len(json.loads((scene / "people.json").read_text())["people"])
    finally:
        DETECTORS.unregister("ground-truth")
