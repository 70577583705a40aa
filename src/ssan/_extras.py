"""The optional extras (``pip install 'ssan[NAME]'``): one import guard with one clear error."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, needs: str, extra: str) -> ModuleType:
    """``import module``, or SsanError "``needs``: pip install 'ssan[extra]'" (e.g. "pictures need matplotlib")."""
    from ssan.errors import SsanError

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SsanError(f"{needs}: pip install 'ssan[{extra}]'") from None


def available(module: str) -> bool:
    """True when ``module`` imports (an extra that is installed)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
