"""SSAN on CLIP trunks: equal to open_clip on identical weights, resized position tables, loading."""

import copy

import pytest
import torch
import torch.nn.functional as F

from ssan.errors import SsanError
from ssan.models import SSAN, PretrainedWeightsError, resize_pos_embed, similarity
from ssan.models.clip_trunks import CLIP_MEAN, CLIP_STD, open_clip_module

open_clip = pytest.importorskip("open_clip")

TINY = {"backbone": "clip-vit", "text_encoder": "clip", "clip_model": "ssan-clip-tiny", "hidden_dim": 64}
TINY["embed_dim"] = 64
CAPTIONS = ["a man in a red shirt and blue jeans", "a woman with a black bag", "a child"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A randomly initialised open_clip model of the tiny architecture, and its weights in a file."""
    torch.manual_seed(0)
    model = open_clip_module().create_model("ssan-clip-tiny", pretrained=None).eval()
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


def _bpe(captions):
    tokens = open_clip.tokenize(captions)  # 77 columns: SOT ... EOT, 0-padded
    lengths = tokens.argmax(dim=1) + 1  # through the EOT (the largest id)
    return tokens[:, : int(lengths.max())], lengths


def test_global_similarity_equals_open_clips_cosine(reference):
    oc_model, path = reference
    model = SSAN(10, parts=False, pretrained=str(path), **TINY).eval()
    pixels = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    tokens, lengths = _bpe(CAPTIONS)
    with torch.no_grad():
        ours = similarity(model.encode_image(pixels * 2 - 1), model.encode_text(tokens, lengths))
        clip_pixels = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
        image = oc_model.encode_image(clip_pixels, normalize=True)
        text = oc_model.encode_text(open_clip.tokenize(CAPTIONS), normalize=True)
    assert ours.shape == (3, 4)
    assert torch.allclose(ours, text @ image.T, atol=1e-5)


def _bilinear_by_hand(grid, out_h, out_w):
    """align_corners=False bilinear resize of an h x w x C grid, written out per output pixel."""
    in_h, in_w = grid.shape[:2]

    def taps(index, size_in, size_out):
        src = max((index + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(src), size_in - 1)
        high = min(low + 1, size_in - 1)
        return low, high, src - low

    out = torch.empty(out_h, out_w, grid.shape[2], dtype=grid.dtype)
    for i in range(out_h):
        y0, y1, wy = taps(i, in_h, out_h)
        for j in range(out_w):
            x0, x1, wx = taps(j, in_w, out_w)
            top = grid[y0, x0] * (1 - wx) + grid[y0, x1] * wx
            bottom = grid[y1, x0] * (1 - wx) + grid[y1, x1] * wx
            out[i, j] = top * (1 - wy) + bottom * wy
    return out


def test_resized_position_table_is_a_bilinear_resize_with_the_class_row_kept():
    table = torch.randn(1 + 14 * 14, 5, dtype=torch.float64)
    resized = resize_pos_embed(table, (14, 14), (24, 8))
    assert resized.shape == (1 + 24 * 8, 5)
    assert torch.equal(resized[0], table[0])
    want = _bilinear_by_hand(table[1:].reshape(14, 14, 5), 24, 8)
    assert torch.allclose(resized[1:].reshape(24, 8, 5), want, atol=1e-12)


def test_image_trunk_at_another_size_uses_the_resized_table(reference):
    """At 128x64 (a 16x8 grid) the class token equals open_clip's ViT given the resized table."""
    oc_model, path = reference
    model = SSAN(10, parts=False, pretrained=str(path), **TINY).eval()
    visual = copy.deepcopy(oc_model.visual)
    visual.positional_embedding = torch.nn.Parameter(resize_pos_embed(visual.positional_embedding, (8, 4), (16, 8)))
    pixels = torch.rand(2, 3, 128, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.encode_image(pixels * 2 - 1)["global"]
        clip_pixels = (pixels - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
        theirs = visual(clip_pixels)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_part_branch_on_clip_tokens_has_ssans_shapes():
    model = SSAN(10, num_parts=4, **TINY).eval()
    tokens, lengths = _bpe(CAPTIONS)
    with torch.no_grad():
        image = model.encode_image(torch.zeros(2, 3, 64, 32))
        text = model.encode_text(tokens, lengths, return_attention=True)
    assert image["global"].shape == (2, 64) and image["parts"].shape == (2, 4, 64)
    assert image["relation"].shape == (2, 4, 32) and text["parts"].shape == (3, 4, 64)
    assert text["attention"].shape == (3, tokens.size(1), 4)
    assert torch.all(text["attention"][2, int(lengths[2]) :] == 0)  # padding past the EOT is masked
    assert not hasattr(model, "global_proj")


def test_padding_columns_change_nothing():
    model = SSAN(10, num_parts=4, **TINY).eval()
    tokens, lengths = _bpe(CAPTIONS)
    padded = F.pad(tokens, (0, 5))
    with torch.no_grad():
        short = model.text_encoder(tokens, lengths)
        long = model.text_encoder(padded, lengths)
    assert torch.allclose(short["pooled"], long["pooled"], atol=1e-6)


def test_missing_or_wrong_weights_are_one_line_errors(tmp_path, reference):
    with pytest.raises(PretrainedWeightsError, match="CLIP weights file not found: .*nope.pt.*--set model.pretrained"):
        SSAN(10, pretrained=str(tmp_path / "nope.pt"), **TINY)
    with pytest.raises(PretrainedWeightsError, match="names no file"):
        SSAN(10, pretrained=True, **TINY)
    other = open_clip_module().create_model("ssan-clip-tiny", pretrained=None).state_dict()
    other["visual.conv1.weight"] = torch.zeros(64, 3, 16, 16)
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(PretrainedWeightsError, match=r"visual.conv1.weight|conv1.weight has shape \(64, 3, 16, 16\)"):
        SSAN(10, pretrained=str(tmp_path / "other.pt"), **TINY)
    (tmp_path / "junk.pt").write_bytes(b"not weights")
    with pytest.raises(SsanError, match="cannot read CLIP weights"):
        SSAN(10, pretrained=str(tmp_path / "junk.pt"), **TINY)


def test_clip_trunks_pair_with_each_other_and_their_width():
    with pytest.raises(SsanError, match="pair clip-vit with clip"):
        SSAN(10, backbone="clip-vit", clip_model="ssan-clip-tiny", hidden_dim=64, embed_dim=64)
    with pytest.raises(SsanError, match="model.hidden_dim=64 and model.embed_dim=64"):
        SSAN(10, **{**TINY, "embed_dim": 128})


def test_an_import_clip_checkpoint_is_a_weights_file(reference, tmp_path):
    """``ssan import-clip``'s checkpoint of the same weights gives the same model as the file."""
    from ssan.clip import import_clip

    oc_model, path = reference
    import_clip("ssan-clip-tiny", tmp_path / "imported.pt", weights=path)
    from_file = SSAN(10, parts=False, pretrained=str(path), **TINY).eval()
    imported = SSAN(10, parts=False, pretrained=str(tmp_path / "imported.pt"), **TINY).eval()
    for (name, a), (_, b) in zip(from_file.state_dict().items(), imported.state_dict().items()):
        assert torch.equal(a, b), name
