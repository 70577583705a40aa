"""Small building blocks shared by the image, text and relation modules."""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.25  # negative slope of every LeakyReLU in SSAN


def is_tracing() -> bool:
    """True while TorchScript, torch.compile, torch.export or ONNX export records the model."""
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return True
    compiler = getattr(torch, "compiler", None)  # is_exporting needs torch >= 2.5
    return any(getattr(compiler, name, lambda: False)() for name in ("is_compiling", "is_exporting"))


def stripe_windows(height: int, num_parts: int) -> list:
    """Row windows ``[(start, end), ...]`` of ``adaptive_max_pool2d(x, (num_parts, 1))`` on ``height`` rows."""
    return [((k * height) // num_parts, -((-(k + 1) * height) // num_parts)) for k in range(num_parts)]


def stripe_max(fmap: torch.Tensor, num_parts: int) -> torch.Tensor:
    """Horizontal-stripe max pooling: B x C x H x W -> B x K x C.

    The same values as ``adaptive_max_pool2d(fmap, (K, 1))``, written as a max over explicit row
    windows: its backward has no atomic additions (deterministic on CUDA, where the adaptive
    pool's backward is not), and ONNX exports it for any map height.
    """
    windows = stripe_windows(int(fmap.shape[2]), num_parts)
    return torch.stack([fmap[:, :, start:end, :].amax(dim=(2, 3)) for start, end in windows], dim=1)


def kaiming_fan_out_(weight: torch.Tensor) -> torch.Tensor:
    """Kaiming-normal (fan_out) init of a 1x1 convolution / linear weight of shape out x in."""
    return nn.init.kaiming_normal_(weight, mode="fan_out", nonlinearity="relu")


class PartLinear(nn.Module):
    """K independent bias-free 1x1 convolutions, one per part, applied in one batched op.

    Equivalent to ``K`` separate ``Conv2d(in_dim, out_dim, 1, bias=False)`` layers, with the
    weights stacked as ``weight[k]`` (``out_dim x in_dim``).

    Args:
        num_parts: K.
        in_dim: input width.
        out_dim: output width.
    """

    def __init__(self, num_parts: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.weight = nn.Parameter(torch.empty(num_parts, out_dim, in_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for part_weight in self.weight:
                kaiming_fan_out_(part_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B x K x in_dim -> B x K x out_dim (part k uses weight[k])."""
        return torch.einsum("bki,koi->bko", x, self.weight)

    def extra_repr(self) -> str:
        return f"num_parts={self.num_parts}, in_dim={self.in_dim}, out_dim={self.out_dim}, bias=False"
