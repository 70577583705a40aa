"""Kept for benchmarks/bench_serve.py until it builds its model with ``SSAN(vocab_size, config.model)``."""

from __future__ import annotations

import dataclasses

from ssan.config import ModelConfig


def model_kwargs(cfg: ModelConfig, vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, **dataclasses.asdict(cfg)}
