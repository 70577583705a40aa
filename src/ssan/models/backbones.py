"""Image backbones, one registry: torchvision ResNets (optionally ImageNet-pretrained), a small CPU CNN.

Every backbone maps ``B x 3 x H x W`` images to a ``B x C x h x w`` feature map; the SSAN
heads pool that map. ``C`` must equal the LSTM hidden width because the text word
features pass through the same global and part projections as the image map. Add one
from user code with :func:`register_backbone` (see ``docs/extending.md``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torchvision
from torch import nn

from ssan.config import ModelConfig
from ssan.errors import CheckpointError, ConfigError
from ssan.models._state_dict import strip_prefixes
from ssan.models.layers import kaiming_fan_out_
from ssan.registry import Registry

log = logging.getLogger(__name__)

_RESNET_WEIGHTS: dict[str, Callable] = {  # the reference's ImageNet weights (torchvision's V1)
    "resnet50": lambda: torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet18": lambda: torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
}


class ArchitectureError(ConfigError, ValueError):
    """Inconsistent model constructor arguments (also a ValueError for library users)."""


class PretrainedWeightsError(CheckpointError):
    """Pretrained backbone weights were requested but cannot be obtained or loaded."""


@dataclass(frozen=True)
class Backbone:
    """A registered image backbone.

    build: ``build(config) -> nn.Module`` mapping ``B x 3 x H x W`` images to a
        ``B x C x h x w`` map; ``config`` is the whole :class:`ssan.config.ModelConfig`
        (``pretrained``, ``hidden_dim``, ``cnn_width``... as the builder needs them).
    out_channels: C, or None when the builder outputs ``config.hidden_dim`` channels.
        C must equal the LSTM hidden width: the word features pass through the same
        projections as the image map.
    pooled: the module returns ``{"map": B x C x h x w, "pooled": B x D}``, its own global
        feature (a CLIP ViT's class token), instead of the map alone; it pairs with a text
        encoder that is ``pooled`` too (:mod:`ssan.models.text_encoders`).
    """

    build: Callable[[ModelConfig], nn.Module]
    out_channels: Optional[int] = None
    pooled: bool = False

    def channels(self, config: ModelConfig) -> int:
        """The map's channels for ``config``."""
        return self.out_channels if self.out_channels is not None else config.hidden_dim


BACKBONES: Registry[Backbone] = Registry("backbone", ArchitectureError)


def register_backbone(name: str, out_channels: Optional[int] = None, *, pooled: bool = False, overwrite: bool = False):
    """Decorator registering ``build(config) -> nn.Module`` as backbone ``name``.

    Args:
        name: the value of ``model.backbone`` that selects it.
        out_channels: channels of its output map (None: it outputs ``config.hidden_dim``).
        pooled: it returns its own global feature too (see :class:`Backbone`).
    """

    def decorate(build: Callable[[ModelConfig], nn.Module]):
        BACKBONES.register(name, Backbone(build, out_channels, pooled), overwrite=overwrite)
        return build

    return decorate


class ResNetTrunk(nn.Module):
    """A torchvision ResNet up to and excluding the average pool (last stride kept at 2).

    Attribute names match torchvision's, so a torchvision state dict (minus ``fc.*``) loads.
    384x128 input gives a ``C x 12 x 4`` map (C = 2048 for ResNet-50/101/152, 512 for 18/34).

    Args:
        name: a torchvision ResNet constructor (``resnet50``, ``resnet101``...).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, name)(weights=None)
        for part in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, part, getattr(net, part))
        self.out_channels = net.fc.in_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: B x 3 x H x W -> B x C x H/32 x W/32."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def resnet_trunk(name: str, pretrained: Union[bool, str, Path] = False) -> ResNetTrunk:
    """A :class:`ResNetTrunk`, with ImageNet (``True``) or local-file (a path) weights loaded strictly."""
    trunk = ResNetTrunk(name)
    if pretrained:
        load_trunk_weights(trunk, name, pretrained)
    return trunk


@register_backbone("resnet50", out_channels=2048)
def _resnet50(config: ModelConfig) -> nn.Module:
    return resnet_trunk("resnet50", config.pretrained)


@register_backbone("resnet18", out_channels=512)
def _resnet18(config: ModelConfig) -> nn.Module:
    return resnet_trunk("resnet18", config.pretrained)


def _conv_block(in_ch: int, out_ch: int, stride: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Sequential):
    """A from-scratch CNN for CPU-sized runs: conv-BN-ReLU blocks, overall stride 8.

    The stem already has stride 2, so no layer runs at full resolution (those layers cost
    most of a CPU training step). 64x32 input gives an ``out_channels x 8 x 4`` map. With
    ``width=32`` it has about 0.16 M parameters (``out_channels=128``).

    Args:
        width: channels of the first blocks (later blocks use 2x and 4x).
        out_channels: channels of the output map (= the model's LSTM hidden width).
    """

    def __init__(self, width: int = 32, out_channels: int = 128) -> None:
        super().__init__(
            _conv_block(3, width, stride=2),
            _conv_block(width, width),
            _conv_block(width, 2 * width, stride=2),
            _conv_block(2 * width, 2 * width),
            _conv_block(2 * width, 4 * width, stride=2),
            _conv_block(4 * width, out_channels, kernel=1),
        )
        self.out_channels = out_channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_fan_out_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)


@register_backbone("small")
def _small(config: ModelConfig) -> nn.Module:
    if config.pretrained:
        raise ArchitectureError("backbone 'small' is trained from scratch: set model.pretrained=false")
    return SmallCNN(config.cnn_width, config.hidden_dim)


def build_backbone(config: ModelConfig) -> nn.Module:
    """The backbone ``config.backbone``, checked to output ``config.hidden_dim`` channels."""
    entry = BACKBONES.get(config.backbone)
    channels = entry.channels(config)
    if channels != config.hidden_dim:
        raise ArchitectureError(
            f"backbone {config.backbone} outputs {channels} channels but hidden_dim={config.hidden_dim}; the "
            f"word features share the image projections, so set hidden_dim={channels} for {config.backbone}"
        )
    return entry.build(config)


def _hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _imagenet_weights(name: str):
    """The torchvision weights enum entry of ResNet ``name`` (V1 for the reference's two)."""
    if name in _RESNET_WEIGHTS:
        return _RESNET_WEIGHTS[name]()
    return torchvision.models.get_model_weights(name).DEFAULT


def _imagenet_state_dict(name: str) -> dict:
    """torchvision's ImageNet weights for ``name`` via the torch hub cache (downloads if absent)."""
    weights = _imagenet_weights(name)
    file_name = weights.url.rsplit("/", 1)[-1]
    try:
        return torch.hub.load_state_dict_from_url(weights.url, progress=False, file_name=file_name, weights_only=True)
    except Exception as exc:  # network, disk and hash errors all mean: no weights
        raise PretrainedWeightsError(
            f"cannot get ImageNet weights for {name} ({type(exc).__name__}: {exc}); download {weights.url} "
            f"and either place it in torchvision's cache ({_hub_checkpoint_dir() / file_name}) or pass "
            f"--set model.pretrained=/path/{file_name}"
        ) from None


def _file_state_dict(path: Union[str, Path], name: str) -> dict:
    path = Path(path).expanduser()
    hint = _imagenet_weights(name).url
    if not path.is_file():
        raise PretrainedWeightsError(
            f"pretrained weights file not found: {path}; download {hint} and pass "
            f"--set model.pretrained=/path/{hint.rsplit('/', 1)[-1]} (or model.pretrained=true with internet)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"cannot read pretrained weights {path}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"pretrained weights {path} do not hold a state dict")
    return state


def _clean_keys(state: dict) -> dict:
    return {key: value for key, value in strip_prefixes(state).items() if not key.startswith("fc.")}


def load_trunk_weights(trunk: ResNetTrunk, name: str, source: Union[bool, str, Path]) -> None:
    """Load ImageNet (``source=True``) or file (``source=path``) weights into ``trunk``, strictly.

    ``module.`` / ``_orig_mod.`` prefixes are stripped and ``fc.*`` is ignored; any other
    missing, unexpected or mis-shaped key raises :class:`PretrainedWeightsError`.
    """
    state = _imagenet_state_dict(name) if source is True else _file_state_dict(source, name)
    where = "ImageNet weights" if source is True else str(source)
    state = _clean_keys(state)
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        raise PretrainedWeightsError(
            f"{where} do not fit a {name} backbone: missing {_preview(missing)}, unexpected "
            f"{_preview(unexpected)}, wrong shape {_preview(wrong)}"
        )
    trunk.load_state_dict(state, strict=False)
    log.info("loaded %s backbone weights from %s", name, where)


def _preview(keys: list, limit: int = 5) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
