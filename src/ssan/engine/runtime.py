"""Process-wide switches a training run sets while it runs (and restores after): threads, determinism, TF32.

What ``train.deterministic`` buys (see the README, "Exact resume"): on the CPU every run is
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
        "matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        if device.type == "cpu" and train.cpu_threads > 0:
            torch.set_num_threads(train.cpu_threads)
        if train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = bool(train.cudnn_benchmark) and not train.deterministic
        torch.backends.cuda.matmul.allow_tf32 = bool(train.tf32)
        yield
    finally:
        torch.set_num_threads(saved["threads"])
        torch.use_deterministic_algorithms(saved["deterministic"])
        torch.backends.cudnn.benchmark = saved["benchmark"]
        torch.backends.cudnn.deterministic = saved["cudnn_deterministic"]
        torch.backends.cuda.matmul.allow_tf32 = saved["matmul"]
