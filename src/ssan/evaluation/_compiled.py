"""Selects the compiled rank kernel (:mod:`ssan.evaluation._rank_kernel`) when Numba is there.

Numba comes with the ``fast`` extra (``dev`` pulls it in). Without it, or when it cannot
compile here, :func:`kernel` returns None and :mod:`ssan.evaluation._ranking` uses its NumPy
path, which gives the same ranks more slowly. :func:`set_rank_kernel` chooses: ``"numpy"``
forces the NumPy path, ``"numba"`` makes a missing kernel an error instead of a fallback,
``"auto"`` (the default) takes the kernel when it works.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

_CHOICES = ("auto", "numba", "numpy")
_lock = threading.Lock()
_state: dict = {"choice": "auto"}


def set_rank_kernel(choice: str) -> str:
    """Choose the CPU rank-counting path for this process: ``auto``, ``numba`` or ``numpy``.

    Returns the previous choice (to restore it).
    """
    choice = str(choice).strip().lower()
    if choice not in _CHOICES:
        raise ValueError(f"the rank kernel must be one of {', '.join(_CHOICES)}, got {choice!r}")
    previous, _state["choice"] = _state["choice"], choice
    return previous


def _load() -> Optional[Callable]:
    try:
        from ssan.evaluation._rank_kernel import count_ranks
    except ImportError:
        return None
    except Exception as exc:  # a broken Numba / LLVM install: fall back, say why once
        log.warning("compiled rank kernel unavailable (%s: %s); using the NumPy path", type(exc).__name__, exc)
        return None
    probe = np.array([[0.5, 0.25, 0.5]], dtype=np.float32)
    ranks = np.zeros((1, 1), dtype=np.int64)
    try:
        count_ranks(
            probe, 0, 1, np.array([[2]], dtype=np.int64), np.array([1], dtype=np.int64), ranks
        )  # compiles (or loads) here
    except Exception as exc:
        log.warning("compiled rank kernel failed to build (%s: %s); using the NumPy path", type(exc).__name__, exc)
        return None
    if int(ranks[0, 0]) != 2:
        log.warning("compiled rank kernel gave a wrong rank on its self-check; using the NumPy path")
        return None
    return count_ranks


def kernel() -> Optional[Callable]:
    """The compiled kernel, or None (Numba missing or unusable, or ``set_rank_kernel("numpy")``).

    Raises:
        RuntimeError: ``set_rank_kernel("numba")`` but the kernel cannot be had.
    """
    choice = _state["choice"]
    if choice == "numpy":
        return None
    with _lock:
        if "kernel" not in _state:
            _state["kernel"] = _load()
    if _state["kernel"] is None and choice == "numba":
        raise RuntimeError(
            "the numba rank kernel was asked for but Numba is not installed or cannot compile "
            "here (pip install 'ssan[fast]')"
        )
    return _state["kernel"]


def kernel_name() -> str:
    """``"numba"`` or ``"numpy"``: the CPU path :func:`kernel` selects now."""
    return "numpy" if kernel() is None else "numba"
