"""Process-wide switches a training run sets while it runs (and restores after): threads, determinism, TF32.

``train.tf32`` covers every float32 kernel that TF32 can speed up: cuBLAS matmuls and cuDNN's
convolutions and LSTM (``false``: full float32 for all three; cuDNN's own default is TF32).

What ``train.deterministic`` buys (see docs/gpu.md, "Exact resume"): on the CPU every run is
deterministic anyway, and a resumed run equals an uninterrupted one bit for bit. On CUDA the
default kernels are not deterministic (cuDNN's algorithm search and several backward kernels use
atomic additions), so a resumed run is only close; with ``train.deterministic`` PyTorch must use
deterministic kernels (``torch.use_deterministic_algorithms``), cuDNN's search is off, the cuBLAS
workspace is fixed, and SSAN's own deterministic paths are used (word-max backward without atomic
additions; the pooling, the cross entropy and the embedding have deterministic backward passes).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import torch

log = logging.getLogger(__name__)


@contextlib.contextmanager
def training_runtime(train, device: torch.device) -> Iterator[None]:
    """Apply ``train``'s (a :class:`ssan.config.TrainConfig`) process-wide settings for the block."""
    saved = {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
    }
    if train.deterministic:
        _check_cublas_workspace(device)
    try:
        with fp32_precision("tf32" if train.tf32 else "ieee"):
            if device.type == "cpu" and train.cpu_threads > 0:
                torch.set_num_threads(train.cpu_threads)
            if train.deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = bool(train.cudnn_benchmark) and not train.deterministic
            yield
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"])
        torch.backends.cudnn.benchmark = saved["benchmark"]
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]


CUBLAS_WORKSPACE = ":4096:8"  # a fixed cuBLAS workspace: what deterministic cuBLAS needs


def _check_cublas_workspace(device: torch.device) -> None:
    """cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` when the process first uses it: setting it here is too
    late when CUDA already ran in this process (a Python-API user's earlier model or matmul)."""
    if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized():
        log.warning(
            "train.deterministic: CUDA was used in this process before training started, without "
            "CUBLAS_WORKSPACE_CONFIG; cuBLAS may not be deterministic and PyTorch may raise at the first "
            "matmul: set CUBLAS_WORKSPACE_CONFIG=%s in the environment before starting Python",
            CUBLAS_WORKSPACE,
        )


# TF32 switches: matmul (cuBLAS), convolutions and RNNs (cuDNN). torch 2.9+ has per-backend
# ``fp32_precision`` settings; mixing them with the older ``allow_tf32`` flags raises, so only one
# kind is ever touched.
_NEW_API = hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")


@contextlib.contextmanager
def fp32_precision(precision: str) -> Iterator[None]:
    """float32 matmuls, convolutions and RNNs in ``"tf32"`` or full ``"ieee"`` precision for the block."""
    if _NEW_API:
        backends = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
        saved = [backend.fp32_precision for backend in backends]
        values = [precision] * len(backends)
    else:  # torch < 2.9
        backends = [torch.backends.cuda.matmul, torch.backends.cudnn]
        saved = [backend.allow_tf32 for backend in backends]
        values = [precision == "tf32"] * len(backends)
    attribute = "fp32_precision" if _NEW_API else "allow_tf32"
    try:
        for backend, value in zip(backends, values):
            setattr(backend, attribute, value)
        yield
    finally:
        for backend, value in zip(backends, saved):
            setattr(backend, attribute, value)
