"""SSAN-CLIP's tokenizer, recipe (parameter groups, schedule, validation) and augmentations."""

import math

import pytest
import torch
import torch.nn.functional as F

from ssan.config import DataConfig, load_config
from ssan.data.augment import AugmentDraws, augment_images, draw_augmentations, erase, pad_crop
from ssan.data.tokenizers import ClipTokenizer, model_tokenizer
from ssan.data.vocab import Vocabulary
from ssan.engine.builders import ComponentBuilders
from ssan.engine.optim import schedule_factor
from ssan.errors import ConfigError, SsanError
from ssan.losses import build_criterion
from ssan.models import SSAN

open_clip = pytest.importorskip("open_clip")

TINY = {"backbone": "clip-vit", "text_encoder": "clip", "clip_model": "ssan-clip-tiny", "hidden_dim": 64}
TINY["embed_dim"] = 64


# ------------------------------------------------------------------ tokenizer
def test_clip_tokenizer_equals_open_clips_ids_without_the_padding():
    tokenizer = ClipTokenizer()
    text = "A woman in a RED t-shirt, carrying a black bag."
    ids, unknown = tokenizer.encode(text)
    want = open_clip.tokenize([text])[0]
    assert unknown == [] and ids == want[: int(want.argmax()) + 1].tolist()
    assert ids[0] == tokenizer.sot and ids[-1] == tokenizer.eot and len(tokenizer) == 49408
    pieces = tokenizer.decode(ids)
    assert len(pieces) == len(ids) and pieces[2] == "woman"


def test_long_captions_are_cut_with_the_end_token_last():
    tokenizer = ClipTokenizer()
    text = " ".join(["red"] * 200)
    ids, _ = tokenizer.encode(text)
    assert len(ids) == 77 and ids[-1] == tokenizer.eot
    assert ids == open_clip.tokenize([text])[0].tolist()  # open_clip cuts the same way
    full, _ = tokenizer.encode_tokens(tokenizer.words_of(text))
    assert len(full) == 202 and tokenizer.truncate(full, 40)[-1] == tokenizer.eot


def test_records_are_reencoded_from_their_captions_and_the_model_picks_its_tokenizer():
    vocab = Vocabulary(["<pad>", "red", "shirt"])
    records = [{"image": "a.jpg", "id": 1, "label": 0, "captions": ["red shirt", "Blue jeans"], "tokens": [[1, 2], []]}]
    encoded = ClipTokenizer().encode_records(records)
    assert encoded[0]["tokens"][1] == open_clip.tokenize(["Blue jeans"])[0][:4].tolist()
    assert records[0]["tokens"] == [[1, 2], []]  # the prepared records are left as they were
    assert model_tokenizer({"text_encoder": "lstm"}, vocab) is vocab
    assert model_tokenizer({}, vocab) is vocab  # archs of older versions
    assert isinstance(model_tokenizer(SSAN(3, **TINY).arch, vocab, 77), ClipTokenizer)


# ------------------------------------------------------------------ recipe
def _groups(config):
    torch.manual_seed(0)
    model = SSAN(10, config.model)
    criterion = build_criterion(config.loss, 5, config.model)
    optimizer = ComponentBuilders.build_optimizer(config, model, criterion)
    names = {id(p): f"model.{n}" for n, p in model.named_parameters()}
    names.update({id(p): f"criterion.{n}" for n, p in criterion.named_parameters()})
    return optimizer, {group["name"]: sorted(names[id(p)] for p in group["params"]) for group in optimizer.param_groups}


def test_each_parameter_lands_in_the_recipes_group():
    config = load_config("synth-clip", [*(f"optim.{k}={v}" for k, v in {"lr": 5e-5, "backbone_lr": 1e-5}.items())])
    config.optim.bias_lr_factor, config.optim.bias_weight_decay, config.optim.weight_decay = 2.0, 0.0, 4e-5
    optimizer, groups = _groups(config)
    assert list(groups) == ["new", "backbone", "new_bias", "backbone_bias"]
    settings = {g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups}
    assert settings == {
        "new": (5e-5, 4e-5),
        "backbone": (1e-5, 4e-5),
        "new_bias": (1e-4, 0.0),
        "backbone_bias": (2e-5, 0.0),
    }
    assert optimizer.defaults["eps"] == config.optim.eps
    listed = {name: group for group, names in groups.items() for name in names}
    # the trunks: both CLIP towers, weights and biases apart
    assert listed["model.backbone.visual.conv1.weight"] == "backbone"
    assert listed["model.backbone.visual.positional_embedding"] == "backbone"
    assert listed["model.text_encoder.token_embedding.weight"] == "backbone"
    assert listed["model.text_encoder.transformer.resblocks.0.attn.in_proj_bias"] == "backbone_bias"
    assert listed["model.text_encoder.ln_final.bias"] == "backbone_bias"
    # newly initialised: SSAN's heads and the classifiers
    assert listed["model.part_proj.weight"] == "new" and listed["model.word_attention.score.weight"] == "new"
    assert listed["model.relation.norm.bias"] == "new_bias"
    assert listed["criterion.terms.id.classifiers.global.weight"] == "new"
    assert listed["criterion.terms.id.classifiers.global.bias"] == "new_bias"
    assert all(
        name.startswith("model.backbone.") or name.startswith("model.text_encoder.") for name in groups["backbone"]
    )
    assert not any(".backbone." in n or ".text_encoder." in n for n in groups["new"] + groups["new_bias"])
    assert sum(map(len, groups.values())) == len(listed)  # each parameter in one group


def test_the_papers_recipe_keeps_its_two_groups():
    optimizer, groups = _groups(load_config("synth"))
    assert list(groups) == ["new", "backbone"]
    assert all(n.startswith("model.backbone.") for n in groups["backbone"])
    assert "model.text_encoder.lstm.weight_ih_l0" in groups["new"]


def test_cosine_after_linear_warmup_is_irras_schedule():
    factor = [schedule_factor(e, schedule="cosine", epochs=60, warmup_epochs=5, warmup_factor=0.1) for e in range(61)]
    assert factor[0] == pytest.approx(0.1) and factor[1] == pytest.approx(0.28) and factor[4] == pytest.approx(0.82)
    assert factor[5] == pytest.approx(1.0) and factor[60] == pytest.approx(0.0, abs=1e-12)
    assert factor[32] == pytest.approx(0.5 * (1 + math.cos(math.pi * 27 / 55)))
    config = load_config("cuhk-pedes-clip")
    scheduler = ComponentBuilders.build_scheduler(
        config, torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    )
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        scheduler.step()
    assert rates == pytest.approx([0.1, 0.28, 0.46, 0.64, 0.82, 1.0])


def test_the_clip_presets_hold_the_recipe():
    for name in ("cuhk-pedes-clip", "icfg-pedes-clip", "rstpreid-clip"):
        config = load_config(name)
        optim, data = config.optim, config.data
        assert (config.model.backbone, config.model.text_encoder, data.height, data.width) == (
            "clip-vit",
            "clip",
            384,
            128,
        )
        assert (optim.backbone_lr, optim.lr, optim.eps, optim.weight_decay) == (1e-5, 5e-5, 1e-3, 4e-5)
        assert (optim.bias_lr_factor, optim.bias_weight_decay, optim.schedule, optim.warmup_epochs) == (
            2.0,
            0.0,
            "cosine",
            5,
        )
        assert (data.pad_crop, data.erase_prob, data.erase_scale) == (10, 0.5, (0.02, 0.4))
        assert config.loss.terms == {"id": 1.0, "cr": 1.0, "sdm": 1.0}


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.schedule=linear", "optim.schedule"),
        ("optim.eps=0", "optim.eps"),
        ("optim.warmup_epochs=-1", "optim.warmup_epochs"),
        ("data.erase_prob=1.5", "data.erase_prob"),
        ("data.erase_fill=[1, 2]", "data.erase_fill"),
        ("data.pad_crop=-1", "data.pad_crop"),
        ("optim.bias_weight_decay=-1", "optim.bias_weight_decay"),
    ],
)
def test_recipe_settings_are_validated_at_load(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("cuhk-pedes-clip", [override])


def test_the_real_presets_refuse_to_run_without_clip_weights():
    config = load_config("rstpreid-clip")
    with pytest.raises(
        SsanError, match=r"names no file: download the ViT-B-16-quickgelu CLIP weights .*--set model.pretrained"
    ):
        SSAN(10, config.model)


# ------------------------------------------------------------------ augmentations
def test_pad_crop_equals_padding_then_cropping_each_image():
    images = torch.randn(3, 3, 8, 6)
    offsets = torch.tensor([[0, 0], [4, 1], [2, 3]])
    out = pad_crop(images, offsets, pad=2)
    padded = F.pad(images, (2, 2, 2, 2), value=-1.0)  # black in the (0.5, 0.5) normalisation
    for i, (dy, dx) in enumerate(offsets.tolist()):
        assert torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 6])


def test_erasing_fills_the_box_with_the_colour_and_nothing_else():
    images = torch.zeros(2, 3, 8, 6)
    boxes = torch.tensor([[1, 2, 3, 2], [0, 0, 0, 0]])  # the second image is not erased
    out = erase(images, boxes, (0.48145466, 0.4578275, 0.40821073))
    colour = (torch.tensor([0.48145466, 0.4578275, 0.40821073]) - 0.5) / 0.5
    assert torch.allclose(out[0, :, 1:4, 2:4], colour[:, None, None].expand(3, 3, 2))
    out[0, :, 1:4, 2:4] = 0
    assert torch.equal(out, torch.zeros_like(out))


def test_augmentation_draws_of_a_process_are_its_rows_of_the_global_batch():
    data = DataConfig(height=16, width=8, pad_crop=3, erase_prob=0.5)
    whole = draw_augmentations(data, 8, torch.Generator().manual_seed(5), slice(0, 8))
    second = draw_augmentations(data, 8, torch.Generator().manual_seed(5), slice(4, 8))
    assert torch.equal(whole.offsets[4:], second.offsets) and torch.equal(whole.boxes[4:], second.boxes)
    assert whole.offsets.min() >= 0 and whole.offsets.max() <= 6
    top, left, h, w = whole.boxes.T
    assert torch.all((top + h <= 16) & (left + w <= 8))
    many = draw_augmentations(data, 4000, torch.Generator().manual_seed(0), slice(0, 4000)).boxes
    erased = many[:, 2] > 0
    assert 0.45 < erased.float().mean() < 0.55  # p = 0.5 (nearly every draw fits in ten tries)
    area = (many[erased, 2] * many[erased, 3]).float() / (16 * 8)
    assert area.min() >= 0.01 and area.max() <= 0.5
    out = augment_images(torch.zeros(8, 3, 16, 8), data, AugmentDraws(whole.offsets, whole.boxes))
    assert out.shape == (8, 3, 16, 8)
