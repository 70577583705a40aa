"""SSAN-CLIP through the engine and every downstream command: train, resume, DDP, AMP, test/index/search/export."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

import ssan.losses.ranking as ranking
from helpers import run_cli
from ssan.checkpoint import load_checkpoint, load_model
from ssan.config import load_config
from ssan.data.tokenizers import ClipTokenizer
from ssan.engine.trainer import Trainer
from ssan.losses import LossContext, SSANCriterion, StepInputs
from ssan.models import SSAN

pytest.importorskip("open_clip")

CLIP_OVERRIDES = [
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "data.num_workers=0",
    "data.pad_crop=2",
    "data.erase_prob=0.5",
    "optim.epochs=2",
    "train.cpu_threads=1",
]
# the synth preset turned into SSAN-CLIP by overrides (tests/ddp_step.py loads "synth")
AS_CLIP = [
    "model.backbone=clip-vit",
    "model.text_encoder=clip",
    "model.clip_model=ssan-clip-tiny",
    "model.embed_dim=64",
    "model.hidden_dim=64",
    "model.num_parts=4",
    "data.max_length=77",
    "loss.terms={id: 1.0, cr: 1.0, sdm: 1.0}",
]


@pytest.fixture(scope="module")
def clip_run(prepared_synth, tmp_path_factory):
    run = tmp_path_factory.mktemp("clip") / "run"
    Trainer.from_config(load_config("synth-clip", CLIP_OVERRIDES), prepared_synth, run, device="cpu").fit()
    return run


@pytest.mark.slow
def test_synth_clip_trains_end_to_end(clip_run):
    results = json.loads((clip_run / "results.json").read_text())
    figures = results["test_last"]["t2i"]["sum"]
    assert results["test_last"]["num_queries"] > 0 and 0 <= figures["R1"] <= 100
    rows = [json.loads(line) for line in (clip_run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(row["loss/total"])) for row in rows)
    assert "loss/sdm_global" in rows[0]
    model, tokenizer, info = load_model(clip_run / "checkpoints" / "best.pt")
    assert isinstance(tokenizer, ClipTokenizer) and model.arch["text_encoder"] == "clip"
    assert not model.arch["pretrained"]


@pytest.mark.slow
def test_every_downstream_command_takes_an_ssan_clip_checkpoint(clip_run, prepared_synth, tmp_path):
    checkpoint = clip_run / "checkpoints" / "best.pt"
    code, out, err = run_cli("test", "--checkpoint", checkpoint, "--data", prepared_synth, "--no-progress")
    assert code == 0, err
    assert "sum" in out
    index = tmp_path / "index"
    code, _, err = run_cli(
        "index", "--checkpoint", checkpoint, "--data", prepared_synth, "--out", index, "--no-progress"
    )
    assert code == 0, err
    query = "a man in a red shirt"
    code, out, err = run_cli("search", "--index", index, "--json", "-k", "3", query)
    assert code == 0, err
    torch_answer = json.loads(out)
    assert (
        torch_answer["tokens"][:3] == ["<start_of_text>", "a", "man"] and torch_answer["tokens"][-1] == "<end_of_text>"
    )
    assert len(torch_answer["results"]) == 3
    code, out, err = run_cli("export", "--checkpoint", checkpoint, "--out", tmp_path / "onnx")
    assert code == 0, err
    assert "parity check passed" in out
    from ssan.search.encoders import load_encoders  # the ONNX query path reads the export's own byte pairs

    meta = json.loads((tmp_path / "onnx" / "meta.json").read_text())
    _, info = load_encoders(backend="onnx", onnx_dir=tmp_path / "onnx")
    assert (tmp_path / "onnx" / meta["bpe_file"]).is_file()
    assert info.vocab.merges_file == tmp_path / "onnx" / meta["bpe_file"]
    assert info.vocab.encode(query)[0] == ClipTokenizer().encode(query)[0]
    code, out, err = run_cli(
        "search", "--index", index, "--json", "-k", "3", "--backend", "onnx", "--onnx", tmp_path / "onnx", query
    )
    assert code == 0, err
    onnx_answer = json.loads(out)
    assert [r["image_id"] for r in onnx_answer["results"]] == [r["image_id"] for r in torch_answer["results"]]
    for a, b in zip(onnx_answer["results"], torch_answer["results"]):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


@pytest.mark.slow
def test_footage_and_the_service_take_an_ssan_clip_checkpoint(clip_run, tmp_path):
    pytest.importorskip("av")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ssan.search import Searcher
    from ssan.search.app import create_app
    from ssan.search.security import Security
    from ssan.search.tokens import TokenStore, generate_token
    from ssan.video import generate_synthetic_video

    scene = tmp_path / "scene"
    generate_synthetic_video(scene, seconds=3, people=2, fps=5, size=(96, 160), seed=0, progress=False)
    index = tmp_path / "footage"
    code, _, err = run_cli(
        "index", "--checkpoint", clip_run / "checkpoints" / "best.pt", "--video", scene / "video.mp4",
        "--detections", scene / "gt" / "gt.txt", "--keep-ids", "--out", index, "--fps", 5, "--no-progress",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli("search", "--index", index, "--json", "-k", "5", "a person walking")
    assert code == 0, err
    cli_results = json.loads(out)["results"]
    assert len(cli_results) == 2 and all(r.get("source_kind") == "video" for r in cli_results)
    token = generate_token()
    app = create_app(Searcher(index), Security(tokens=TokenStore([(None, token)], "test")))
    client = TestClient(app, base_url="http://127.0.0.1:8000", headers={"Authorization": f"Bearer {token}"})
    response = client.post("/api/search", json={"query": "a person walking", "k": 5})
    assert response.status_code == 200, response.text
    api_results = response.json()["results"]
    assert [r["image_id"] for r in api_results] == [r["image_id"] for r in cli_results]
    for a, b in zip(api_results, cli_results):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    assert client.get(api_results[0]["frame_url"]).status_code == 200


@pytest.mark.slow
def test_deterministic_clip_runs_are_equal_bit_for_bit(prepared_synth, tmp_path):
    overrides = CLIP_OVERRIDES + ["optim.epochs=1", "train.max_steps_per_epoch=3", "train.deterministic=true"]
    states = []
    for name in ("a", "b"):
        config = load_config("synth-clip", overrides)
        Trainer.from_config(config, prepared_synth, tmp_path / name, device="cpu").fit()
        states.append(load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["model"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])
    assert not torch.are_deterministic_algorithms_enabled()  # the switch is restored after training


@pytest.mark.slow
def test_interrupted_and_resumed_clip_run_equals_uninterrupted(clip_run, prepared_synth, tmp_path):
    from test_engine import Interrupted, StopAfter

    config = load_config("synth-clip", CLIP_OVERRIDES + ["train.checkpoint_every=2"])
    run = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        Trainer.from_config(config, prepared_synth, run, device="cpu", hooks=[StopAfter(3)]).fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step_in_epoch"] == 2
    Trainer.from_config(config, prepared_synth, run, device="cpu", resume=True).fit()
    ours, theirs = (load_checkpoint(r / "checkpoints" / "last.pt")["model"] for r in (run, clip_run))
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    a, b = (json.loads((r / "results.json").read_text())["test_last"]["t2i"] for r in (run, clip_run))
    assert a == b


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 3])
def test_ddp_gradients_of_a_clip_trunk_equal_one_process(prepared_synth, tmp_path, epoch):
    from test_engine_gpu_ready import launch

    overrides = AS_CLIP + ["data.batch_size=16", "data.num_workers=0", "train.sync_bn=true", "data.pad_crop=2"]
    overrides += ["data.erase_prob=0.5"]
    single = launch(prepared_synth, tmp_path / "one", overrides, 1, epoch)
    ddp = launch(prepared_synth, tmp_path / "two", overrides, 2, epoch)
    assert (single["world"], ddp["world"]) == (1, 2)
    assert single["grads"].keys() == ddp["grads"].keys()
    assert any(name.startswith("backbone.visual.") for name in single["grads"])
    for name, grad in single["grads"].items():
        error = (ddp["grads"][name] - grad).abs().max().item()
        assert error <= 1e-5 * grad.abs().max().item() + 1e-8, (name, error, grad.abs().max().item())
    for name, value in single["terms"].items():
        assert ddp["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def _clip_batch(batch: int = 8) -> dict:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 12, (batch,), generator=gen)
    tokens = torch.randint(1, 49406, (batch, 12), generator=gen)
    tokens[:, 0] = 49406
    tokens[torch.arange(batch), lengths - 1] = 49407
    tokens = tokens * (torch.arange(12)[None] < lengths[:, None])
    return {
        "image": torch.randn(batch, 3, 64, 32, generator=gen),
        "tokens": tokens,
        "lengths": lengths,
        "weak_tokens": tokens.roll(1, 0),
        "weak_lengths": lengths.roll(1, 0),
        "label": torch.arange(batch) % 4,
    }


def _step(dtype, monkeypatch):
    monkeypatch.setattr(ranking, "_uniform_pick", lambda candidates, generator: candidates.to(torch.uint8).argmax(1))
    torch.manual_seed(0)
    model = SSAN(10, load_config("synth-clip").model).train()
    context = LossContext(num_classes=4, num_parts=4, embed_dim=64)
    criterion = SSANCriterion(context, terms={"id": 1.0, "cr": 1.0, "sdm": 1.0})
    batch = _clip_batch()
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with autocast:
        terms = criterion(model(batch), batch, StepInputs(epoch=3))
    terms["total"].backward()
    params = list(model.parameters()) + list(criterion.parameters())
    return terms, torch.cat([p.grad.flatten() for p in params if p.grad is not None])


@pytest.mark.parametrize("dtype, tolerance, min_cosine", [(torch.float16, 0.01, 0.99), (torch.bfloat16, 0.05, 0.9)])
def test_a_clip_step_under_cpu_autocast_is_finite_and_close_to_fp32(dtype, tolerance, min_cosine, monkeypatch):
    reference, ref_grads = _step(None, monkeypatch)
    terms, grads = _step(dtype, monkeypatch)
    for name, value in terms.items():
        assert torch.isfinite(value), name
    assert torch.isfinite(grads).all()
    relative = abs(terms["total"].item() - reference["total"].item()) / reference["total"].item()
    assert relative < tolerance, (relative, terms["total"].item(), reference["total"].item())
    cosine = torch.nn.functional.cosine_similarity(grads.float(), ref_grads, dim=0).item()
    assert cosine > min_cosine, cosine
