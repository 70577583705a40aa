"""Selects the compiled rank kernel (:mod:`ssan.evaluation._rank_kernel`) when Numba is there.

Numba comes with the ``fast`` extra (``dev`` pulls it in). Without it, or when it cannot
compile here, :func:`kernel` returns None and :mod:`ssan.evaluation._ranking` uses its NumPy
path, which gives the same ranks more slowly. ``SSAN_RANK_KERNEL=numpy`` forces the NumPy
path; ``SSAN_RANK_KERNEL=numba`` makes a missing kernel an error instead of a fallback.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)

_CHOICES = ("auto", "numba", "numpy")
_lock = threading.Lock()
_state: dict = {}


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
        count_ranks(probe, 0, 1, np.array([[2]], dtype=np.int64), np.array([1], dtype=np.int64), ranks)  # compiles (or loads) here
    except Exception as exc:
        log.warning("compiled rank kernel failed to build (%s: %s); using the NumPy path", type(exc).__name__, exc)
        return None
    if int(ranks[0, 0]) != 2:
        log.warning("compiled rank kernel gave a wrong rank on its self-check; using the NumPy path")
        return None
    return count_ranks


def kernel() -> Optional[Callable]:
    """The compiled kernel, or None (Numba missing or unusable, or ``SSAN_RANK_KERNEL=numpy``).

    Raises:
        ValueError: ``SSAN_RANK_KERNEL`` is not one of auto, numba, numpy.
        RuntimeError: ``SSAN_RANK_KERNEL=numba`` but the kernel cannot be had.
    """
    choice = os.environ.get("SSAN_RANK_KERNEL", "auto").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ValueError(f"SSAN_RANK_KERNEL must be one of {', '.join(_CHOICES)}, got {choice!r}")
    if choice == "numpy":
        return None
    with _lock:
        if "kernel" not in _state:
            _state["kernel"] = _load()
    if _state["kernel"] is None and choice == "numba":
        raise RuntimeError("SSAN_RANK_KERNEL=numba but Numba is not installed or cannot compile here "
                           "(pip install 'ssan[fast]')")
    return _state["kernel"]


def kernel_name() -> str:
    """``"numba"`` or ``"numpy"``: the CPU path :func:`kernel` selects now."""
    return "numpy" if kernel() is None else "numba"
