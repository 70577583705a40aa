"""Tests for ssan.models: shapes, text encoder, WAM, relation module, similarity, backbones."""

from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

import ssan.models._word_max as word_max_module
from ssan.errors import CheckpointError, ConfigError
from ssan.models import (
    BACKBONES,
    SSAN,
    ArchitectureError,
    PartRelation,
    PretrainedWeightsError,
    SmallCNN,
    TextEncoder,
    WordAttention,
    build_backbone,
    feature_terms,
    flatten_features,
    global_text_max,
    similarity,
)

SMALL = dict(num_parts=6, embed_dim=32, word_dim=16, hidden_dim=24, backbone="small", cnn_width=8, dropout=0.3)


def small_model(vocab: int = 50, **overrides) -> SSAN:
    torch.manual_seed(0)
    return SSAN(vocab, **{**SMALL, **overrides})


def random_text(batch: int, length: int, vocab: int = 50, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=gen)
    lengths[0] = length
    tokens = torch.randint(1, vocab, (batch, length), generator=gen)
    tokens[torch.arange(length)[None, :] >= lengths[:, None]] = 0
    return tokens, lengths


@pytest.mark.slow
def test_paper_configuration_shapes():
    model = SSAN(5000, pretrained=False).eval()
    images = torch.randn(2, 3, 384, 128)
    tokens, lengths = random_text(2, 30, vocab=5000)
    with torch.no_grad():
        assert model.backbone(images).shape == (2, 2048, 12, 4)
        image, text = model.encode_image(images), model.encode_text(tokens, lengths)
    for feats in (image, text):
        assert feats["global"].shape == (2, 1024)
        assert feats["parts"].shape == (2, 6, 1024)
        assert feats["relation"].shape == (2, 6, 512)


def test_text_encoder_parameter_count_matches_reference():
    encoder = TextEncoder(5000, word_dim=512, hidden_dim=2048)
    count = sum(p.numel() for p in encoder.parameters())
    assert count == 2 * 5000 * 512 + 2 * 4 * 2048 * (512 + 2048) == 47_063_040


@pytest.mark.parametrize("train, norm", [(False, "per_part"), (True, "shared"), (False, "shared")])
def test_batch_size_one(train, norm):
    model = small_model(relation_norm=norm).train(train)
    tokens, lengths = random_text(1, 5)
    image = model.encode_image(torch.randn(1, 3, 64, 32))
    text = model.encode_text(tokens, lengths)
    assert image["relation"].shape == text["relation"].shape == (1, 6, 16)
    if train:
        (image["relation"].sum() + text["relation"].sum()).backward()


def test_training_at_batch_size_one_with_per_part_norm_is_refused():
    model = small_model().train()
    with pytest.raises(ConfigError, match="relation_norm=shared"):
        model.encode_image(torch.randn(1, 3, 64, 32))


def test_padding_and_batch_mates_change_nothing():
    model = small_model().eval()
    tokens, lengths = random_text(4, 9)
    padded = F.pad(tokens, (0, 13))
    with torch.no_grad():
        base = model.encode_text(tokens, lengths, return_attention=True)
        more = model.encode_text(padded, lengths, return_attention=True)
        alone = model.encode_text(tokens[2:3, : int(lengths[2])], lengths[2:3])
    for term in ("global", "parts", "relation"):
        torch.testing.assert_close(base[term], more[term])
        torch.testing.assert_close(base[term][2:3], alone[term], rtol=1e-5, atol=1e-5)
    garbage = padded.clone()
    garbage[torch.arange(22)[None, :] >= lengths[:, None]] = 7  # ids past a caption's end are ignored
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(garbage, lengths)["relation"], base["relation"])
    assert more["attention"].shape == (4, 22, 6)
    torch.testing.assert_close(more["attention"][:, :9], base["attention"])
    mask = torch.arange(22)[None, :] < lengths[:, None]
    assert (more["attention"][~mask] == 0).all() and (more["attention"][mask] > 0).all()


def test_lengths_may_be_a_list_and_are_checked():
    model = small_model().eval()
    tokens, lengths = random_text(3, 6)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_text(tokens, lengths.tolist())["global"], model.encode_text(tokens, lengths)["global"]
        )
    with pytest.raises(ValueError, match="lengths"):
        model.encode_text(tokens, torch.tensor([0, 2, 3]))
    with pytest.raises(ValueError, match="lengths"):
        model.encode_text(tokens, torch.tensor([7, 2, 3]))


def test_word_features_are_the_mean_of_both_lstm_directions():
    torch.manual_seed(4)
    encoder = TextEncoder(20, word_dim=6, hidden_dim=5).eval()
    tokens, lengths = random_text(3, 7, vocab=20)
    words = encoder(tokens, lengths)
    for b in range(3):
        real = tokens[b : b + 1, : int(lengths[b])]
        for path, table in (("global", encoder.global_embedding), ("part", encoder.part_embedding)):
            states = encoder.lstm(table(real))[0][0]  # one unpadded caption: length x 2C
            torch.testing.assert_close(words[path][b, : int(lengths[b])], (states[:, :5] + states[:, 5:]) / 2)
            assert (words[path][b, int(lengths[b]) :] == 0).all()


def test_global_text_max_has_zero_padding_semantics():
    words = torch.tensor([[[-1.0, 2.0], [-3.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    torch.testing.assert_close(global_text_max(words, mask), torch.tensor([[0.0, 2.0]]))


def wam_loop(wam: WordAttention, words: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Straightforward per-sample, per-part loop, like the reference."""
    rows = []
    for b in range(words.size(0)):
        e = words[b, : int(lengths[b])]
        s = torch.sigmoid(e @ wam.score.weight.T)
        rows.append(torch.stack([(s[:, k : k + 1] * e).max(dim=0).values for k in range(s.size(1))]))
    return torch.stack(rows)


def test_batched_wam_equals_per_sample_loop():
    torch.manual_seed(1)
    wam = WordAttention(channels=10, num_parts=4)
    lengths = torch.tensor([5, 1, 3, 5])
    mask = torch.arange(5)[None, :] < lengths[:, None]
    words = torch.randn(4, 5, 10) * mask[..., None]
    parts, attention = wam(words, mask)
    torch.testing.assert_close(parts, wam_loop(wam, words, lengths))
    assert attention.shape == (4, 5, 4) and (attention[~mask] == 0).all()


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("block_elements", [1, 40, 1 << 22])
def test_blocked_word_max_matches_the_dense_formulation(monkeypatch, block_elements, deterministic):
    monkeypatch.setattr(word_max_module, "_CPU_BLOCK_ELEMENTS", block_elements)
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: deterministic)
    torch.manual_seed(5)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None, :] < lengths[:, None]
    scores = torch.rand(3, 6, 4, dtype=torch.float64, requires_grad=True)
    words = torch.randn(3, 6, 5, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 4, 5, dtype=torch.float64)
    fast = torch.autograd.grad((word_max_module.word_max(scores, words, mask) * weights).sum(), (scores, words))
    dense = torch.autograd.grad((word_max_module.dense_word_max(scores, words, mask) * weights).sum(), (scores, words))
    for got, expected in zip(fast, dense):
        torch.testing.assert_close(got, expected)
    with torch.no_grad():
        torch.testing.assert_close(
            word_max_module.word_max(scores, words, mask), word_max_module.dense_word_max(scores, words, mask)
        )
    assert torch.autograd.gradcheck(lambda s, w: word_max_module.word_max(s, w, mask), (scores, words))


def relation_loop(module: PartRelation, x: torch.Tensor, normalise) -> torch.Tensor:
    """Method section 2 steps 1-8 written per part with explicit loops.

    ``normalise(ups)`` takes the K per-part ``B x D`` outputs of U_k and returns ``B x K x D``.
    """
    lrelu = lambda v: F.leaky_relu(v, 0.25)  # noqa: E731
    num_parts = x.size(1)
    p = [F.normalize(lrelu(x[:, k] @ module.part_proj.weight[k].T), dim=-1) for k in range(num_parts)]
    c = [F.normalize(lrelu(x[:, k] @ module.context_proj.weight[k].T), dim=-1) for k in range(num_parts)]
    ups = []
    for k in range(num_parts):
        scores = torch.stack(
            [(p[j] * c[k]).sum(-1) if j != k else torch.full_like(p[j][:, 0], -1e6) for j in range(num_parts)], dim=1
        )
        weights = scores.softmax(dim=1)
        z = sum(weights[:, j : j + 1] * p[j] for j in range(num_parts))
        ups.append(z @ module.up_proj.weight[k].T)
    y = x + lrelu(normalise(ups))
    return torch.stack([y[:, k] @ module.out_proj.weight[k].T for k in range(num_parts)], dim=1)


def separate_norms(module: PartRelation, parts: int, dim: int) -> list:
    """K BatchNorm1d(D) layers holding the K slices of the module's per-part BatchNorm."""
    norms = []
    for k in range(parts):
        bn = torch.nn.BatchNorm1d(dim).train(module.training)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).copy_(getattr(module.norm, name)[k * dim : (k + 1) * dim])
        norms.append(bn)
    return norms


@pytest.mark.parametrize("train", [True, False])
def test_per_part_norm_equals_separate_batchnorms_part_by_part(train):
    torch.manual_seed(2)
    parts, dim = 4, 8
    module = PartRelation(num_parts=parts, dim=dim).train(train)
    with torch.no_grad():  # distinct statistics and affine parameters per part
        module.norm.running_mean.normal_()
        module.norm.running_var.uniform_(0.5, 2.0)
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.normal_()
    norms = separate_norms(module, parts, dim)
    x = torch.randn(5, parts, dim, requires_grad=True)
    out = module(x)
    expected = relation_loop(module, x, lambda ups: torch.stack([bn(u) for bn, u in zip(norms, ups)], dim=1))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for k, bn in enumerate(norms):  # running statistics updated the same way, slice by slice
        torch.testing.assert_close(module.norm.running_mean[k * dim : (k + 1) * dim], bn.running_mean)
        torch.testing.assert_close(module.norm.running_var[k * dim : (k + 1) * dim], bn.running_var)
    weights = torch.randn_like(out)
    got = torch.autograd.grad((out * weights).sum(), [x, module.norm.weight, module.norm.bias])
    want = torch.autograd.grad(
        (expected * weights).sum(), [x] + [bn.weight for bn in norms] + [bn.bias for bn in norms]
    )
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], torch.cat(want[1 : 1 + parts]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[2], torch.cat(want[1 + parts :]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [True, False])
def test_shared_norm_pools_batch_and_parts(train):
    torch.manual_seed(2)
    module = PartRelation(num_parts=4, dim=8, norm="shared").train(train)
    x = torch.randn(3, 4, 8)
    pooled = lambda ups: module.norm(torch.stack(ups, dim=2)).transpose(1, 2)  # noqa: E731  (B x D x K map)
    torch.testing.assert_close(module(x), relation_loop(module, x, pooled), rtol=1e-5, atol=1e-5)
    assert module.norm.num_features == 8
    assert module.train()(torch.randn(1, 4, 8)).shape == (1, 4, 4)  # trains at batch size 1


def test_relation_module_batch_size_one():
    module = PartRelation(num_parts=4, dim=8).train()
    with pytest.raises(ConfigError, match="batch of 1 sample"):
        module(torch.randn(1, 4, 8))
    assert module.eval()(torch.randn(1, 4, 8)).shape == (1, 4, 4)  # inference at batch 1 works


def test_similarity_is_inner_product_of_flattened_features():
    model = small_model().eval()
    tokens, lengths = random_text(5, 7)
    with torch.no_grad():
        image = model.encode_image(torch.randn(3, 3, 64, 32))
        text = model.encode_text(tokens, lengths, return_attention=True)
    assert feature_terms(text) == ["global", "parts", "relation"]
    full = similarity(image, text)
    assert full.shape == (5, 3)
    torch.testing.assert_close(full, flatten_features(text) @ flatten_features(image).T)
    singles = [similarity(image, text, terms=t) for t in ("global", "parts", "relation")]
    torch.testing.assert_close(full, sum(singles))
    expected = F.cosine_similarity(text["parts"].flatten(1)[:, None], image["parts"].flatten(1)[None], dim=-1)
    torch.testing.assert_close(singles[1], expected)
    assert flatten_features(image, ["global", "relation"]).shape == (3, 32 + 6 * 16)
    with pytest.raises(ValueError, match="valid"):
        similarity(image, text, terms="colour")


def test_global_only_ablation():
    model = small_model(parts=False)
    names = [name for name, _ in model.named_parameters()]
    assert not any(n.startswith(("part_proj", "word_attention", "relation", "text_encoder.part")) for n in names)
    tokens, lengths = random_text(2, 4)
    image, text = model.encode_image(torch.randn(2, 3, 64, 32)), model.encode_text(tokens, lengths, True)
    assert set(image) == set(text) == {"global"}
    assert similarity(image, text).shape == (2, 2)


def test_arch_rebuilds_the_same_model():
    model = small_model(vocab=30)
    rebuilt = SSAN(**model.arch)
    assert rebuilt.arch == model.arch
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_small_backbone_size_and_map():
    for hidden in (128, 256):
        net = SmallCNN(width=32, out_channels=hidden)
        assert 100_000 <= sum(p.numel() for p in net.parameters()) <= 300_000
        assert net(torch.randn(2, 3, 64, 32)).shape == (2, hidden, 8, 4)


def test_initialisation():
    model = small_model(hidden_dim=64, embed_dim=128)
    assert torch.equal(model.relation.norm.weight, torch.ones(6 * 128))  # one BN per part
    assert torch.equal(model.relation.norm.bias, torch.zeros(6 * 128))
    std = model.part_proj.weight[0].std().item()
    assert abs(std - (2 / 128) ** 0.5) < 0.2 * (2 / 128) ** 0.5  # Kaiming normal, fan_out = D


def test_word_attention_keeps_the_default_initialisation():
    torch.manual_seed(0)
    channels = 2048
    wam = WordAttention(channels, num_parts=6)
    weight = wam.score.weight
    bound = 1 / channels**0.5
    assert weight.abs().max() <= bound  # uniform in +-1/sqrt(C), PyTorch's default for a 1x1 conv
    expected = 1 / (3 * channels) ** 0.5  # std of that uniform: 0.0128 at C = 2048
    assert abs(weight.std().item() - expected) < 0.05 * expected
    words = torch.rand(4, 20, channels) * 0.6 - 0.3  # LSTM states: |e| < 1, typically a few tenths
    _, scores = wam(words, torch.ones(4, 20, dtype=torch.bool))
    assert 0.4 < scores.min() and scores.max() < 0.6  # every score starts near 0.5


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_outputs_the_channels_it_reports(name):
    from ssan.config import ModelConfig

    entry = BACKBONES.get(name)
    channels = entry.channels(ModelConfig(hidden_dim=40))
    config = ModelConfig(backbone=name, hidden_dim=channels, cnn_width=8)
    embed = 16
    if entry.pooled:  # a CLIP trunk: its text partner and its own width (the tiny architecture's 64)
        channels = embed = 64
        tiny = {"text_encoder": "clip", "clip_model": "ssan-clip-tiny", "hidden_dim": 64, "embed_dim": 64}
        config = ModelConfig(backbone=name, **tiny)
    fmap = build_backbone(config).eval()(torch.randn(2, 3, 64, 32))
    fmap = fmap["map"] if entry.pooled else fmap
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, channels)
    model = SSAN(20, config, embed_dim=embed, word_dim=8)
    with torch.no_grad():
        assert model.encode_image(torch.randn(2, 3, 64, 32))["parts"].shape == (2, 6, embed)
    if entry.out_channels is not None:
        with pytest.raises(ArchitectureError, match=f"hidden_dim={channels}"):
            SSAN(20, config, hidden_dim=channels + 8)


def test_architecture_errors_are_clear():
    with pytest.raises(ArchitectureError, match="hidden_dim=2048"):
        SSAN(10, hidden_dim=512)
    with pytest.raises(ValueError, match="valid: resnet50, resnet18, small"):
        SSAN(10, backbone="vgg")
    with pytest.raises(ConfigError, match="from scratch"):
        SSAN(10, **{**SMALL, "pretrained": True})
    with pytest.raises(ValueError, match="even"):
        SSAN(10, **{**SMALL, "embed_dim": 33})


def test_pretrained_path_loads_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
    model = SSAN(20, backbone="resnet18", hidden_dim=512, embed_dim=64, word_dim=16, pretrained=str(path))
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.testing.assert_close(model.backbone.bn1.running_mean, reference.bn1.running_mean)
    assert model.arch["pretrained"] is False


def test_pretrained_file_of_the_wrong_network_is_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="missing .*layer1.0.conv3.weight"):
        SSAN(20, pretrained=str(path))


def test_pretrained_missing_path_raises_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*--set model.pretrained=/path/resnet18-f37072fd.pth"):
        SSAN(20, backbone="resnet18", hidden_dim=512, pretrained=str(tmp_path / "absent.pth"))


def test_pretrained_true_without_network_raises_a_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(PretrainedWeightsError) as info:
        SSAN(20, pretrained=True)
    message = str(info.value)
    assert "resnet50-0676ba61.pth" in message and str(tmp_path / "checkpoints") in message
    assert "--set model.pretrained=" in message
