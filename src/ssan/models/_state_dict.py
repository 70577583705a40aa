"""State-dict keys as wrappers write them: ``module.`` (DDP, DataParallel), ``_orig_mod.`` (torch.compile)."""

from __future__ import annotations

PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state_dict: dict) -> dict:
    """The same state dict with every leading ``module.`` / ``_orig_mod.`` removed from its keys."""
    cleaned = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        cleaned[key] = value
    return cleaned
