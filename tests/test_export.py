"""ONNX export: parity with PyTorch, the export-friendly LSTM, onnx-backed search."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from helpers import run_cli, save_random_checkpoint
from ssan.errors import SsanError  # noqa: E402
from ssan.export import ExportTextEncoder, _reverse_within, export_onnx  # noqa: E402
from ssan.models.layers import stripe_windows  # noqa: E402
from ssan.search import GalleryIndex, GalleryIndexError, Searcher, build_index  # noqa: E402

PARITY = 1e-4


@pytest.fixture(scope="module")
def checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("export") / "random.pt", prepared_synth, seed=3)


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return out, export_onnx(checkpoint, out)


def test_reverse_within_length_is_its_own_inverse():
    x = torch.arange(2 * 5 * 1, dtype=torch.float).view(2, 5, 1)
    lengths = torch.tensor([5, 3])
    reversed_ = _reverse_within(x, lengths)
    assert reversed_[0, :, 0].tolist() == [4, 3, 2, 1, 0]
    assert reversed_[1, :, 0].tolist() == [7, 6, 5, 8, 9]
    assert torch.equal(_reverse_within(reversed_, lengths), x)


@pytest.mark.parametrize("height", [3, 4, 7, 8, 12])
def test_stripe_windows_match_adaptive_max_pool(height):
    x = torch.randn(2, 5, height, 3)
    expected = torch.nn.functional.adaptive_max_pool2d(x, (6, 1)).flatten(2)
    got = torch.stack([x[:, :, s:e, :].amax(dim=(2, 3)) for s, e in stripe_windows(height, 6)], dim=2)
    assert torch.equal(expected, got)


def test_export_friendly_text_encoder_equals_packed_lstm(checkpoint):
    from ssan.checkpoint import load_model

    model, _, _ = load_model(checkpoint)
    wrapper = ExportTextEncoder(model).eval()
    tokens = torch.zeros(4, 9, dtype=torch.long)
    lengths = torch.tensor([9, 4, 1, 6])
    for row, length in enumerate(lengths.tolist()):
        tokens[row, :length] = torch.randint(1, model.arch["vocab_size"], (length,))
    with torch.no_grad():
        want = model.encode_text(tokens, lengths, return_attention=True)
        got = dict(zip(("global", "parts", "relation", "attention"), wrapper(tokens, lengths)))
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)


def test_export_parity_and_meta(exported, checkpoint):
    out, meta = exported
    assert (out / "image.onnx").is_file() and (out / "text.onnx").is_file()
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["fingerprint"] == meta["fingerprint"] and on_disk["input"]["height"] == 64
    assert on_disk["vocab"][0] == "<pad>" and on_disk["arch"]["embed_dim"] == 32
    assert set(meta["parity"]) == {
        "image/global",
        "image/parts",
        "image/relation",
        "text/global",
        "text/parts",
        "text/relation",
        "text/attention",
    }
    assert max(meta["parity"].values()) < PARITY, meta["parity"]
    assert set(meta["parity_scale"]) == set(meta["parity"]) and all(v > 0 for v in meta["parity_scale"].values())


def test_onnx_dynamic_batch_and_length(exported, checkpoint):
    from ssan.checkpoint import load_model
    from ssan.search.onnx_backend import OnnxEncoders

    out, _ = exported
    model, _, _ = load_model(checkpoint)
    encoders = OnnxEncoders(out)
    for batch, length in [(1, 1), (5, 40), (7, 3)]:
        tokens = torch.randint(1, model.arch["vocab_size"], (batch, length))
        lengths = torch.randint(1, length + 1, (batch,))
        got = encoders.text(tokens, lengths)
        with torch.no_grad():
            want = model.encode_text(tokens, lengths, return_attention=True)
        for key in want:
            assert float((got[key] - want[key]).abs().max()) < PARITY, (batch, length, key)
        images = torch.rand(batch, 3, 64, 32) * 2 - 1
        with torch.no_grad():
            want_image = model.encode_image(images)
        got_image = encoders.image(images)
        assert all(float((got_image[k] - v).abs().max()) < PARITY for k, v in want_image.items())


def test_global_only_model_exports(prepared_synth, tmp_path):
    checkpoint = save_random_checkpoint(tmp_path / "global.pt", prepared_synth, seed=4, parts=False)
    meta = export_onnx(checkpoint, tmp_path / "onnx")
    assert meta["outputs"] == {"image": ["global"], "text": ["global"]}
    assert max(meta["parity"].values()) < PARITY


def test_onnx_backend_search_matches_torch(exported, checkpoint, synth_root, tmp_path):
    out, _ = exported
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for image in sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:8]:
        shutil.copy(image, gallery / image.name)
    build_index(tmp_path / "idx", checkpoint, images=gallery, progress=False)
    with pytest.raises(GalleryIndexError, match="ssan export"):
        Searcher(tmp_path / "idx", backend="onnx")
    shutil.copytree(out, tmp_path / "idx" / "onnx")
    torch_answer = Searcher(tmp_path / "idx").search("a man in a black coat", k=8)
    onnx_answer = Searcher(tmp_path / "idx", backend="onnx").search("a man in a black coat", k=8)
    assert [r["path"] for r in onnx_answer["results"]] == [r["path"] for r in torch_answer["results"]]
    np.testing.assert_allclose(
        [r["score"] for r in onnx_answer["results"]], [r["score"] for r in torch_answer["results"]], atol=1e-5
    )
    onnx_index = build_index(tmp_path / "idx_onnx", None, images=gallery, backend="onnx", onnx_dir=out, progress=False)
    torch_index = GalleryIndex.load(tmp_path / "idx")
    np.testing.assert_allclose(np.asarray(onnx_index.features), np.asarray(torch_index.features), atol=1e-5)


def test_onnx_export_refused_for_another_checkpoint(exported, prepared_synth, synth_root, tmp_path):
    out, _ = exported
    other = save_random_checkpoint(tmp_path / "other.pt", prepared_synth, seed=9)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    image = next(p for p in (synth_root / "imgs").rglob("*") if p.is_file())
    shutil.copy(image, gallery / image.name)
    build_index(tmp_path / "idx", other, images=gallery, progress=False)
    with pytest.raises(GalleryIndexError, match="ONNX export"):
        Searcher(tmp_path / "idx", backend="onnx", onnx_dir=out)


def test_cli_export_prints_parity(checkpoint, tmp_path, capsys):
    import argparse

    from ssan.commands import export as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")])) == 0
    text = capsys.readouterr().out
    assert "text/attention" in text and "parity check passed" in text


def test_export_without_the_extra_fails_first_and_writes_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    code, _, stderr = run_cli("export", "--checkpoint", checkpoint, "--out", tmp_path / "o")
    assert code == 2 and stderr.strip().splitlines() == [
        "ssan export: error: ONNX export needs onnx: pip install 'ssan[export]'"
    ]
    assert not (tmp_path / "o").exists()


def test_export_is_written_whole_or_not_at_all(checkpoint, exported, tmp_path, monkeypatch):
    import ssan.export as export_module

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(SsanError, match="holds no ONNX export; refusing"):
        export_onnx(checkpoint, foreign, verify=False)
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"]

    out = tmp_path / "onnx"
    first = export_onnx(checkpoint, out, verify=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(model, out_dir, *args):
        (out_dir / "image.onnx").write_bytes(b"half")
        raise KeyboardInterrupt  # killed half-way

    monkeypatch.setattr(export_module, "_export_graphs", broken)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(checkpoint, out, verify=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the earlier export is intact
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert first["fingerprint"] == exported[1]["fingerprint"]


def test_parity_verdict_is_library_code():
    from ssan.export import TOLERANCE, parity_report

    assert parity_report({"parity": None}) is None
    meta = {
        "parity": {"image/global": 1e-6, "text/parts": 3e-4},
        "parity_scale": {"image/global": 0.5, "text/parts": 2.0},
    }
    report = parity_report(meta)
    assert report["rows"][1] == ("text/parts", 3e-4, 1.5e-4) and report["worst"] == 1.5e-4
    assert not report["passed"] and parity_report(meta, tolerance=2e-4)["passed"] and TOLERANCE == 1e-4
