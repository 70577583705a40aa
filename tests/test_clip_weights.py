"""open_clip weights: every published layout loads to the same model; bad files are refused in one line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

pytest.importorskip("open_clip")

from clip_models import RN, TINY_MODELS, VIT, random_clip, register_tiny_models  # noqa: E402
from ssan.clip.weights import ClipWeightsError, load_clip_weights, read_state_dict  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def tiny_models(tmp_path_factory):
    register_tiny_models(tmp_path_factory.mktemp("open_clip_configs"))


@pytest.fixture(scope="module")
def vit():
    return random_clip(VIT, seed=3)


def _features(model):
    torch.manual_seed(7)
    images = torch.randn(2, 3, 32, 32)
    tokens = torch.zeros(2, 77, dtype=torch.long)
    tokens[:, :4] = torch.tensor([[49406, 320, 1579, 49407], [49406, 2308, 49407, 0]])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def _torchscript(model, path: Path) -> None:
    """OpenAI's layout: a TorchScript archive of the whole model (made here by scripting open_clip's)."""
    torch.jit.save(torch.jit.script(model), str(path))


def _safetensors(state, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


LAYOUTS = {
    "state_dict.pt": lambda model, path: torch.save(model.state_dict(), path),
    "open_clip_pytorch_model.bin": lambda model, path: torch.save(model.state_dict(), path),
    "model.safetensors": lambda model, path: _safetensors(model.state_dict(), path),
    "wrapped.pt": lambda model, path: torch.save({"epoch": 3, "state_dict": model.state_dict()}, path),
    "ddp.pt": lambda model, path: torch.save(
        {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path
    ),
    "ViT-openai.pt": _torchscript,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_loads_the_same_model(layout, vit, tmp_path):
    path = tmp_path / layout
    LAYOUTS[layout](vit, path)
    loaded = load_clip_weights(VIT, weights=path)
    for want, got in zip(_features(vit), _features(loaded)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_resnet_weights_load(tmp_path):
    model = random_clip(RN, seed=1)
    torch.save(model.state_dict(), tmp_path / "rn.pt")
    loaded = load_clip_weights(RN, weights=tmp_path / "rn.pt")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images), rtol=0, atol=1e-6)


def test_weights_of_another_architecture_name_the_first_mismatch(tmp_path):
    torch.save(random_clip(RN).state_dict(), tmp_path / "rn.pt")
    with pytest.raises(ClipWeightsError) as info:
        load_clip_weights(VIT, weights=tmp_path / "rn.pt")
    message = str(info.value)
    assert "\n" not in message and "does not fit open_clip model ssan-test-vit" in message
    assert "positional_embedding" in message or "visual." in message
    assert "in the file but" in message or "lacks" in message


def test_one_wrong_shape_is_named_with_both_shapes(vit, tmp_path):
    state = dict(vit.state_dict())
    state["text_projection"] = torch.zeros(32, 8)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ClipWeightsError, match=r"text_projection is \(32, 8\) in the file but \(32, 16\) in the model"):
        load_clip_weights(VIT, weights=tmp_path / "w.pt")


@pytest.mark.parametrize("layout", ["state_dict.pt", "model.safetensors", "ViT-openai.pt"])
def test_truncated_file_is_refused(layout, vit, tmp_path):
    path = tmp_path / layout
    LAYOUTS[layout](vit, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ClipWeightsError, match="truncated or corrupted") as info:
        load_clip_weights(VIT, weights=path)
    assert "\n" not in str(info.value)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"state_dict": {"x": _RunsCode(marker)}}, handle)
    torch.save({"visual.proj": _RunsCode(marker)}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(ClipWeightsError, match="refused") as info:
            read_state_dict(tmp_path / name)
        assert "\n" not in str(info.value)
    assert not marker.exists()


def test_torchscript_that_is_not_clip_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), str(tmp_path / "linear.pt"))
    with pytest.raises(ClipWeightsError, match="is not a CLIP model"):
        load_clip_weights(VIT, weights=tmp_path / "linear.pt")


def test_unknown_model_name_lists_close_names(vit, tmp_path):
    torch.save(vit.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ClipWeightsError, match=r"unknown open_clip model 'ViT-B-61' \(close names: .*ViT-B-16"):
        load_clip_weights("ViT-B-61", weights=tmp_path / "w.pt")


def test_offline_pretrained_names_what_to_fetch(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ClipWeightsError) as info:
        load_clip_weights("ViT-B-16", pretrained="laion2b_s34b_b88k")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download the 'laion2b_s34b_b88k' weights of ViT-B-16")
    assert "https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K/resolve/main/" in message
    assert "ssan import-clip ViT-B-16 --weights FILE" in message


def test_unknown_pretrained_tag_lists_the_tags():
    with pytest.raises(ClipWeightsError, match=r"no pretrained tag 'nope' for ViT-B-16 \(its tags: .*openai"):
        load_clip_weights("ViT-B-16", pretrained="nope")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ClipWeightsError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ClipWeightsError, match="empty"):
        read_state_dict(tmp_path / "empty.bin")


def test_offline_hub_names_say_what_to_fetch(monkeypatch, vit, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
    with pytest.raises(ClipWeightsError, match=f"fetch https://huggingface.co/{repo}/resolve/main/open_clip_pytorch"):
        load_clip_weights("ViT-B-16", pretrained=f"hf-hub:{repo}")
    with pytest.raises(ClipWeightsError, match="ssan import-clip local-dir:DIR --weights DIR/open_clip_pytorch_model"):
        load_clip_weights(f"hf-hub:{repo}", weights=tmp_path / "absent.bin")


def test_a_fetched_hub_repository_loads_from_its_folder(vit, tmp_path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODELS[VIT]}))
    torch.save(vit.state_dict(), folder / "open_clip_pytorch_model.bin")
    loaded = load_clip_weights(f"local-dir:{folder}", weights=folder / "open_clip_pytorch_model.bin")
    for want, got in zip(_features(vit), _features(loaded)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    with pytest.raises(ClipWeightsError, match="cannot read its open_clip_config.json"):
        load_clip_weights(f"local-dir:{tmp_path / 'nowhere'}", weights=folder / "open_clip_pytorch_model.bin")
