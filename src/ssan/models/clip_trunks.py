"""CLIP trunks for SSAN (``model.backbone: clip-vit``, ``model.text_encoder: clip``), from open_clip.

Image (:class:`ClipImageTrunk`): an open_clip ViT; every output token after ``ln_post @ proj``;
the class token is the global feature and the patch tokens, laid out on their grid, the map that
SSAN's stripes pool (ViT-B/16 at 384x128: a 512 x 24 x 8 map). The patch-grid position
embeddings are resized bilinearly from the trunk's own grid to the input's (14x14 -> 24x8), the
class token's kept, at every forward, so the table keeps open_clip's shape (any CLIP file loads
strictly; any input size runs). IRRA resizes once and trains the resized table: ours trains the
trunk's table through the resize. Inputs arrive normalised as everywhere in ssan (mean 0.5,
std 0.5); the trunk maps them to CLIP's normalisation exactly (an affine map per channel).

Text (:class:`ClipTextTrunk`): CLIP's causal transformer over BPE ids (SOT ... EOT, see
:mod:`ssan.data.tokenizers`); token features after ``ln_final @ text_projection``; the EOT token
(the last real one) is the global feature, WAM reads SOT..EOT.

``ssan-clip-tiny`` (``models/clip_configs``) is a small open_clip architecture for CPU runs and
tests (``synth-clip``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ssan._extras import require
from ssan.config import ModelConfig
from ssan.models.backbones import ArchitectureError, register_backbone
from ssan.models.clip_weights import clip_state_dict, load_strict
from ssan.models.text_encoders import register_text_encoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SSAN_MEAN, SSAN_STD = 0.5, 0.5  # ssan.data.transforms' normalisation of every input image
CONFIG_DIR = Path(__file__).parent / "clip_configs"
TEXT_ROOT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def open_clip_module():
    """``import open_clip`` with ssan's own configs (``ssan-clip-tiny``) added; one line when absent."""
    open_clip = require("open_clip", "SSAN on CLIP needs open_clip_torch", "clip")
    if "ssan-clip-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def clip_config(name: str) -> dict:
    """open_clip's architecture config of ``name`` (``ViT-B-16``...); ArchitectureError listing some when unknown."""
    open_clip = open_clip_module()
    config = open_clip.get_model_config(name)
    if config is None:
        vits = [m for m in open_clip.list_models() if m.startswith("ViT")]
        raise ArchitectureError(f"unknown open_clip model {name!r}; e.g. {', '.join(vits[:8])}, ssan-clip-tiny")
    return config


def resize_pos_embed(table: torch.Tensor, old_grid: Tuple[int, int], new_grid: Tuple[int, int]) -> torch.Tensor:
    """(1 + h*w) x C position table -> (1 + H*W) x C: the patch grid resized bilinearly, class row kept."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    cls, grid = table[:1], table[1:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bilinear", align_corners=False)
    return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1)], dim=0)


def _check_widths(config: ModelConfig, width: int) -> None:
    if config.hidden_dim != width or config.embed_dim != width:
        raise ArchitectureError(
            f"{config.clip_model} outputs {width}-wide features: set model.hidden_dim={width} and "
            f"model.embed_dim={width} (the global feature is CLIP's own, the parts project {width} -> {width})"
        )


class ClipImageTrunk(nn.Module):
    """images B x 3 x H x W (ssan-normalised) -> {"map": B x D x H/p x W/p, "pooled": B x D}.

    Args:
        visual: an open_clip ``VisionTransformer`` (class-token pooling, a projection).
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok":
            raise ArchitectureError("clip-vit needs a ViT pooled by its class token (no attentional pooling)")
        if visual.proj is None or getattr(visual, "final_ln_after_pool", False):
            raise ArchitectureError("clip-vit needs a ViT with an output projection and ln_post on every token")
        self.visual = visual
        self.grid = tuple(visual.grid_size)
        scale = torch.tensor([SSAN_STD / s for s in CLIP_STD]).view(1, 3, 1, 1)
        shift = torch.tensor([(SSAN_MEAN - m) / s for m, s in zip(CLIP_MEAN, CLIP_STD)]).view(1, 3, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """B x (1 + h*w) x D output tokens (class token first) and the patch grid (h, w)."""
        visual = self.visual
        x = visual.conv1(images * self.scale + self.shift)  # B x W x h x w
        grid = (int(x.shape[2]), int(x.shape[3]))
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.size(0), 1, -1)
        position = resize_pos_embed(visual.positional_embedding, self.grid, grid)
        x = torch.cat([cls, x], dim=1) + position.to(x.dtype)
        x = visual.ln_post(visual.transformer(visual.ln_pre(visual.patch_dropout(x))))
        return x @ visual.proj, grid

    def forward(self, images: torch.Tensor) -> dict:
        x, (height, width) = self.tokens(images)
        patches = x[:, 1:].transpose(1, 2).reshape(x.size(0), x.size(2), height, width)
        return {"map": patches, "pooled": x[:, 0]}


class ClipTextTrunk(nn.Module):
    """tokens B x L BPE ids (SOT ... EOT, 0-padded), lengths B -> {"part", "mask", "pooled"}.

    Args:
        text: an open_clip ``TextTransformer`` (causal mask, no class embedding).
    """

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        if getattr(text, "cls_emb", None) is not None or getattr(text, "attn_mask", None) is None:
            raise ArchitectureError("the clip text encoder needs CLIP's causal text transformer")
        self.token_embedding = text.token_embedding
        self.positional_embedding = text.positional_embedding
        self.transformer = text.transformer
        self.ln_final = text.ln_final
        self.text_projection = text.text_projection
        self.register_buffer("attn_mask", text.attn_mask, persistent=False)
        self.context_length = int(text.positional_embedding.shape[0])

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> dict:
        length = tokens.size(1)
        x = self.token_embedding(tokens) + self.positional_embedding[:length].to(self.token_embedding.weight.dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask[:length, :length]))
        projection = self.text_projection
        x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        lengths = torch.as_tensor(lengths, device=tokens.device)
        mask = torch.arange(length, device=tokens.device)[None, :] < lengths[:, None]
        pooled = x[torch.arange(x.size(0), device=x.device), lengths - 1]  # EOT, the last real token
        return {"part": x * mask[..., None], "mask": mask, "pooled": pooled}


def _towers(config: ModelConfig):
    from open_clip.model import _build_text_tower, _build_vision_tower

    cfg = clip_config(config.clip_model)
    _check_widths(config, int(cfg["embed_dim"]))
    quick_gelu = bool(cfg.get("quick_gelu", False))
    return cfg, quick_gelu, _build_vision_tower, _build_text_tower


@register_backbone("clip-vit", pooled=True)
def _clip_vit(config: ModelConfig) -> nn.Module:
    cfg, quick_gelu, vision_tower, _ = _towers(config)
    state = clip_state_dict(config.pretrained, config.clip_model) if config.pretrained else None  # fails first
    trunk = ClipImageTrunk(vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu))
    if state is not None:
        visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
        load_strict(trunk.visual, visual, f"CLIP image weights {config.pretrained}")
    return trunk


@register_text_encoder("clip", pooled=True, tokenizer="clip")
def _clip_text(config: ModelConfig, vocab_size: int) -> nn.Module:
    cfg, quick_gelu, _, text_tower = _towers(config)
    tower = text_tower(cfg["embed_dim"], cfg["text_cfg"], quick_gelu)
    trunk = ClipTextTrunk(tower)
    if config.pretrained:
        state = clip_state_dict(config.pretrained, config.clip_model)
        if any(k.startswith("text.") for k in state):  # open_clip's CustomTextCLIP layout
            state = {k[len("text.") :]: v for k, v in state.items() if k.startswith("text.")}
        text = {k: v for k, v in state.items() if k.startswith(TEXT_ROOT_KEYS)}
        load_strict(tower, text, f"CLIP text weights {config.pretrained}")
    return trunk
