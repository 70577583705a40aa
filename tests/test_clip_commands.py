"""A CLIP checkpoint (``ssan import-clip``) behind index, search, test, footage and export.

Tiny open_clip models with random weights made here (tests/clip_models.py); the reference for
every figure is open_clip itself on the same weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("open_clip")

from clip_models import RN, VIT, open_clip_features, random_clip, register_tiny_models  # noqa: E402
from helpers import run_cli  # noqa: E402
from ssan.clip.weights import OPENAI_MEAN, OPENAI_STD  # noqa: E402

TEXTS = ["a woman in a white coat and black trousers", "man, red jacket; blue jeans!", "x"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: (open_clip model, ssan CLIP checkpoint path)} for the tiny ViT and ResNet."""
    base = tmp_path_factory.mktemp("clip")
    register_tiny_models(base / "configs")
    out = {}
    for seed, name in enumerate((VIT, RN)):
        model = random_clip(name, seed=seed)
        torch.save(model.state_dict(), base / f"{name}.bin")
        code, stdout, err = run_cli(
            "import-clip", name, "--weights", base / f"{name}.bin", "--out", base / f"{name}.pt"
        )
        assert code == 0, err
        assert "open_clip" in stdout and "letterbox" in stdout
        out[name] = (model, base / f"{name}.pt")
    return out


def _ours(checkpoint, pixels01, texts):
    from ssan.checkpoint import load_model
    from ssan.search.encoders import pad_id_lists

    model, tokenizer, _ = load_model(checkpoint)
    tokens, lengths = pad_id_lists([tokenizer.encode(t)[0] for t in texts], tokenizer.max_length)
    with torch.no_grad():
        image = model.encode_image((pixels01 - 0.5) / 0.5)["global"]
        return image, model.encode_text(tokens, lengths)["global"]


@pytest.mark.parametrize("name", [VIT, RN])
def test_features_equal_open_clip(models, name):
    reference, checkpoint = models[name]
    size = 32 if name == VIT else 64
    pixels01 = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    want = open_clip_features(reference, pixels01, TEXTS, OPENAI_MEAN, OPENAI_STD)
    got = _ours(checkpoint, pixels01, TEXTS)
    for ours, theirs in zip(got, want):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(ours)), rtol=0, atol=1e-5)


def _gallery(folder):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "square.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 24 + 4 * i, 3), dtype=np.uint8)).save(folder / f"tall{i}.png")
    return folder / "square.png"


def _open_clip_cosine(reference, image_path, text):
    import open_clip
    from PIL import Image

    preprocess = open_clip.image_transform(32, is_train=False, mean=OPENAI_MEAN, std=OPENAI_STD)
    pixels = preprocess(Image.open(image_path).convert("RGB")).unsqueeze(0)
    tokens = open_clip.get_tokenizer("ViT-B-16")([text])
    with torch.no_grad():
        return float(reference.encode_image(pixels, normalize=True) @ reference.encode_text(tokens, normalize=True).T)


@pytest.fixture(scope="module")
def image_index(models, tmp_path_factory):
    base = tmp_path_factory.mktemp("clip_index")
    square = _gallery(base / "gallery")
    code, _, err = run_cli("index", "--checkpoint", models[VIT][1], "--images", base / "gallery", "--out", base / "idx")
    assert code == 0, err
    return base / "idx", square


def test_square_image_scores_the_open_clip_cosine(models, image_index):
    from ssan.search import Searcher

    index, square = image_index
    answer = Searcher(index).search(TEXTS[0], k=10)
    assert len(answer["results"]) == 4  # the tall images are letterboxed, not refused
    score = next(r["score"] for r in answer["results"] if r["name"] == "square.png")
    assert score == pytest.approx(_open_clip_cosine(models[VIT][0], square, TEXTS[0]), abs=1e-5)
    assert answer["truncated"] is False and answer["attention"] == {}


def test_long_query_is_truncated_like_open_clip(models, image_index):
    from ssan.search import Searcher

    index, square = image_index
    query = " ".join(["a tall man with a red scarf"] * 20)  # 140 pieces
    answer = Searcher(index).search(query, k=10)
    assert answer["truncated"] is True and len(answer["tokens"]) == 75  # + start and end = 77
    score = next(r["score"] for r in answer["results"] if r["name"] == "square.png")
    assert score == pytest.approx(_open_clip_cosine(models[VIT][0], square, query), abs=1e-5)


def test_search_cli_and_index_records_the_encoder(models, image_index):
    index, _ = image_index
    code, out, err = run_cli("search", "--index", index, "--json", "-k", "2", "--", TEXTS[1])
    assert code == 0, err
    answer = json.loads(out)
    assert len(answer["results"]) == 2 and answer["tokens"][:3] == ["man", ",", "red"]
    meta = json.loads((index / "meta.json").read_text())
    assert meta["encode"] == {"height": 32, "width": 32, "max_length": 75}


def test_another_encoder_is_refused(models, image_index, tmp_path):
    index, _ = image_index
    code, _, err = run_cli("search", "--index", index, "--checkpoint", models[RN][1], "--", "a man")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fingerprint" in err, err
    code, _, err = run_cli("index", "--checkpoint", models[RN][1], "--images", tmp_path, "--out", index, "--add")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fingerprint" in err, err


def test_prepared_split_index_and_zero_shot_test(models, prepared_synth, tmp_path):
    checkpoint = models[VIT][1]
    code, _, err = run_cli("index", "--checkpoint", checkpoint, "--data", prepared_synth, "--out", tmp_path / "idx")
    assert code == 0, err
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert all(entry["id"] is not None for entry in meta["entries"])
    code, out, err = run_cli("test", "--checkpoint", checkpoint, "--data", prepared_synth, "--i2t", "--json")
    assert code == 0, err
    results = json.loads(out)
    text = json.dumps(results)
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert key in text
    assert "i2t" in text


def test_footage_from_mot_boxes(models, tmp_path):
    import shutil

    from ssan.video import generate_synthetic_video

    scene = tmp_path / "scene"
    generate_synthetic_video(scene, seconds=3, people=2, fps=5, size=(96, 160), seed=0, progress=False)
    (tmp_path / "det").mkdir()
    shutil.copy(scene / "gt" / "gt.txt", tmp_path / "det" / "video.txt")
    code, _, err = run_cli(
        "index", "--checkpoint", models[RN][1], "--video", scene / "video.mp4", "--detections", tmp_path / "det",
        "--out", tmp_path / "idx", "--fps", 5, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("search", "--index", tmp_path / "idx", "--json", "--", "a person walking")
    assert code == 0, err
    results = json.loads(out)["results"]
    assert len(results) == 2  # the two walkers, one track each (ids kept from the MOT file's boxes)
    assert all(r.get("source_kind") == "video" for r in results)


def test_export_and_onnx_search(models, image_index):
    pytest.importorskip("onnxruntime")
    index, _ = image_index
    code, out, err = run_cli("export", "--checkpoint", models[VIT][1], "--out", index / "onnx")
    assert code == 0, out + err
    assert "parity check passed" in out
    assert json.loads((index / "onnx" / "meta.json").read_text())["tokenizer"]["kind"] == "clip-bpe"
    answers = {}
    for backend in ("torch", "onnx"):
        code, out, err = run_cli("search", "--index", index, "--backend", backend, "--json", "--", TEXTS[0])
        assert code == 0, err
        answers[backend] = json.loads(out)
    assert [r["name"] for r in answers["onnx"]["results"]] == [r["name"] for r in answers["torch"]["results"]]
    for a, b in zip(answers["onnx"]["results"], answers["torch"]["results"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.slow
def test_demo_footage_with_a_clip_checkpoint(models, tmp_path, monkeypatch):
    import ssan.video.demo

    monkeypatch.setattr(ssan.video.demo, "FOOTAGE_SECONDS", 4)
    monkeypatch.setattr(ssan.video.demo, "FOOTAGE_PEOPLE", 3)
    out = tmp_path / "demo"
    code, stdout, err = run_cli("demo", "--output", out, "--footage", "--checkpoint", models[VIT][1])
    assert code == 0, err
    metrics = json.loads((out / "footage.json").read_text())
    assert metrics["walkers"] == 3 and metrics["tracks"] >= 3
    assert not (out / "run").exists()  # no demo model was trained
    index = json.loads((out / "footage-index" / "meta.json").read_text())
    assert index["checkpoint"] == str(models[VIT][1].resolve())
    code, _, err = run_cli("demo", "--output", out, "--checkpoint", models[VIT][1])
    assert code == 2 and "--checkpoint goes with --footage" in err


def test_service_api_on_a_clip_index(models, image_index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ssan.search import Searcher
    from ssan.search.app import create_app
    from ssan.search.security import Security
    from ssan.search.tokens import TokenStore, generate_token

    index, square = image_index
    token = generate_token()
    app = create_app(Searcher(index), Security(tokens=TokenStore([(None, token)], "test")))
    client = TestClient(app, base_url="http://127.0.0.1:8000", headers={"Authorization": f"Bearer {token}"})
    response = client.post("/api/search", json={"query": TEXTS[0], "k": 4})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["results"]) == 4 and body["attention"] == {}
    score = next(r["score"] for r in body["results"] if r["name"] == "square.png")
    assert score == pytest.approx(_open_clip_cosine(models[VIT][0], square, TEXTS[0]), abs=1e-5)
    assert client.get(body["results"][0]["url"]).status_code == 200
    meta = json.loads((index / "meta.json").read_text())
    assert meta["encoder"] == {"family": "open_clip", "model": VIT, "preprocess": "letterbox"}


def test_onnx_export_indexes_a_gallery_too(models, image_index, tmp_path):
    pytest.importorskip("onnxruntime")
    index, _ = image_index
    export = tmp_path / "onnx"
    assert run_cli("export", "--checkpoint", models[VIT][1], "--out", export)[0] == 0
    gallery = index / "meta.json"
    root = json.loads(gallery.read_text())["sources"][0]["root"]
    code, _, err = run_cli("index", "--backend", "onnx", "--onnx", export, "--images", root, "--out", tmp_path / "idx")
    assert code == 0, err
    theirs = np.load(next((tmp_path / "idx").glob("features*.npy")))
    ours = np.load(next(index.glob("features*.npy")))
    np.testing.assert_allclose(theirs, ours, atol=1e-4)  # the same letterboxed crops, the same features


def test_a_checkpoint_whose_arch_does_not_fit_its_weights_is_refused(models, tmp_path):
    from ssan.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(models[VIT][1])
    state["arch"]["config"]["vision_cfg"]["width"] = 10**6  # built on the meta device: costs nothing
    save_checkpoint(tmp_path / "bad.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    code, _, err = run_cli("export", "--checkpoint", tmp_path / "bad.pt", "--out", tmp_path / "onnx")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "weights do not fit its open_clip model ssan-test-vit" in err and "in the file but" in err


def test_resnet_export_passes_the_parity_check(models, tmp_path):
    pytest.importorskip("onnxruntime")
    code, out, err = run_cli("export", "--checkpoint", models[RN][1], "--out", tmp_path / "onnx")
    assert code == 0 and "parity check passed" in out, out + err
