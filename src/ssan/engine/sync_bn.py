"""BatchNorm with statistics over the global batch of every process (``train.sync_bn``), on any device.

``torch.nn.SyncBatchNorm`` runs on CUDA only (the trainer uses it under NCCL, where its fused
kernels need fewer collectives); this one is written with differentiable collectives, so it runs
on any device and backend and is tested with gloo processes on the CPU. In training, under a
process group, each process computes its local mean and sum of squared deviations, the pieces are
gathered (with gradients) and combined (Chan's parallel formula, numerically stable), and every
process normalises with the global statistics: the forward and, through the gathers' backward,
the gradient equal one BatchNorm over the global batch. Outside training or without a process
group it is an ordinary BatchNorm. Parameter and buffer names are those of the layer it replaces,
so checkpoints load either way.
"""

from __future__ import annotations

import torch
from torch import nn

from ssan.distributed import gather_with_grad, is_active


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Drop-in replacement of ``BatchNorm1d/2d`` (input ``N x C [x ...]``), synchronised across processes."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input (N x C ...), got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_active()):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        count = input.numel() // input.size(1)
        with torch.autocast(input.device.type, enabled=False):
            x = input.float()
            mean = x.mean(dim=dims)
            m2 = ((x - _expand(mean, x)) ** 2).sum(dim=dims)
            means, m2s = gather_with_grad(mean[None]), gather_with_grad(m2[None])  # W x C each
            pieces = means.shape[0]
            total = count * pieces
            global_mean = means.mean(dim=0)
            global_m2 = m2s.sum(dim=0) + count * ((means - global_mean) ** 2).sum(dim=0)
            var = global_m2 / total
            self._update_running(global_mean.detach(), var.detach() * total / max(total - 1, 1))
            y = (x - _expand(global_mean, x)) * _expand(torch.rsqrt(var + self.eps), x)
            if self.affine:
                y = y * _expand(self.weight.float(), x) + _expand(self.bias.float(), x)
        return y.to(input.dtype)

    def _update_running(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(unbiased_var.to(self.running_var.dtype), alpha=momentum)


def _expand(channel: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return channel.view(1, -1, *([1] * (like.dim() - 2)))


def convert_sync_batchnorm(module: nn.Module, native: bool = False) -> nn.Module:
    """``module`` with every BatchNorm replaced by a synchronised one sharing its parameters and
    buffers (the same tensor objects: an optimizer built before still holds the right ones).

    ``native``: PyTorch's ``nn.SyncBatchNorm`` (CUDA only: fused statistics kernels, one
    all-gather forward and one all-reduce backward per layer, for NCCL); otherwise
    :class:`GlobalBatchNorm` (any device and backend: 2 all-gathers forward, 2 all-reduces backward).
    """
    if native:
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_global(module)


def _convert_global(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        setattr(module, name, _convert_global(child))
    return module
