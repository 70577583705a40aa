"""Training engine: the trainer and its builders, hooks, sampler, step, state and checkpoint writer.

Checkpoint files themselves (the schema, loading, inference models) are :mod:`ssan.checkpoint`.
"""

from ssan.engine.hooks import Hook
from ssan.engine.trainer import NonFiniteLoss, Trainer

__all__ = ["Hook", "NonFiniteLoss", "Trainer"]
