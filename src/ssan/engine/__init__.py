"""Training engine: checkpoints, optimisation, distributed helpers and the trainer."""

from ssan.engine.checkpoint import (
    checkpoint_fingerprint,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    save_checkpoint,
)

__all__ = [
    "checkpoint_fingerprint",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "save_checkpoint",
]
