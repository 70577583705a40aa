"""Tiny open_clip models with random weights made here (nothing downloaded), for the CLIP tests.

:func:`register_tiny_models` adds two small configurations to open_clip's registry through its
own ``add_model_config``: a ViT (32 x 32 input, QuickGELU like OpenAI's models) and a ResNet
(64 x 64 input); both keep CLIP's real text side (BPE vocabulary, 77 tokens) at small width.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
TINY_MODELS = {
    "ssan-test-vit": {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": TINY_TEXT,
    },
    "ssan-test-rn": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8},
        "text_cfg": TINY_TEXT,
    },
}
VIT, RN = "ssan-test-vit", "ssan-test-rn"


def register_tiny_models(folder: Path) -> None:
    """Write the configurations into ``folder`` and register them with open_clip (idempotent)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    for name, config in TINY_MODELS.items():
        (folder / f"{name}.json").write_text(json.dumps(config), encoding="utf-8")
    if not all(name in open_clip.list_models() for name in TINY_MODELS):
        open_clip.add_model_config(folder)


def random_clip(name: str, seed: int = 0):
    """An open_clip model of ``name`` in eval mode with random (seeded) weights, non-trivial BatchNorm stats."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        model.logit_scale.fill_(4.0)
    return model


def open_clip_features(model, pixels01: torch.Tensor, texts: list, mean, std) -> tuple:
    """open_clip's own normalised features: images given as 0..1 pixels, texts tokenised by open_clip."""
    import open_clip

    images = (pixels01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    tokens = open_clip.get_tokenizer("ViT-B-16")(texts)
    with torch.no_grad():
        return model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
