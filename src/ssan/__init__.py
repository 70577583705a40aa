"""ssan: text-to-image person re-identification with SSAN.

The public API is re-exported here and imported lazily, so ``import ssan`` (and the
CLI's start-up) stays fast until a name is used::

    import ssan
    model = ssan.SSAN(vocab_size=5000)
    scores = ssan.similarity(model.encode_image(images), model.encode_text(tokens, lengths))
"""

from __future__ import annotations

import importlib
from typing import Any

from ssan._version import __version__

_EXPORTS = {
    "SSAN": "ssan.models",
    "similarity": "ssan.models",
    "flatten_features": "ssan.models",
    "SSANCriterion": "ssan.losses",
    "rank_metrics": "ssan.evaluation",
    "evaluate": "ssan.evaluation",
    "evaluate_checkpoint": "ssan.evaluation",
    "load_model": "ssan.checkpoint",
    "load_checkpoint": "ssan.checkpoint",
    "Trainer": "ssan.engine.trainer",
    "Config": "ssan.config",
    "load_config": "ssan.config",
    "Vocabulary": "ssan.data",
    "load_prepared": "ssan.data",
    "prepare_dataset": "ssan.data",
    "generate_synthetic": "ssan.data",
    "run_demo": "ssan.demo",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ssan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(__all__)
