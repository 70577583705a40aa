"""Helpers shared by test modules (not a test file)."""

from __future__ import annotations

import contextlib
import io
import logging

from ssan import cli


def run_cli(*args) -> tuple:
    """``ssan ARGS`` in-process; returns (exit status, stdout, stderr). Any escaping exception fails."""
    out, err = io.StringIO(), io.StringIO()
    handlers = logging.getLogger("ssan").handlers[:]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in args])
        finally:
            logging.getLogger("ssan").handlers[:] = handlers
    return code, out.getvalue(), err.getvalue()


TINY_ARCH = {"embed_dim": 32, "word_dim": 16, "hidden_dim": 32, "backbone": "small", "cnn_width": 8}


def save_random_checkpoint(path, prepared_dir, seed: int = 0, **arch):
    """An untrained tiny SSAN saved in the checkpoint schema, for tests of mechanics that need no training.

    ``arch`` overrides entries of :data:`TINY_ARCH` (e.g. ``parts=False``).
    """
    import torch

    from ssan.checkpoint import save_checkpoint
    from ssan.config import load_config
    from ssan.data import load_prepared
    from ssan.models import SSAN

    prepared = load_prepared(prepared_dir)
    torch.manual_seed(seed)
    model = SSAN(len(prepared.vocab), **{**TINY_ARCH, **arch})
    state = {
        "arch": model.arch,
        "model": model.state_dict(),
        "vocab": prepared.vocab.to_list(),
        "dataset": {"name": "synth", "num_classes": prepared.num_classes, "vocab_size": len(prepared.vocab)},
        "config": load_config("synth").to_dict(),
        "epoch": 0,
        "metrics": {},
        "best": None,
    }
    return save_checkpoint(path, state)


# Python source that makes every torch.save stop with half its bytes written (flushed to disk) and
# sleep, so that a test can SIGKILL a writer mid-write. Prepended to a subprocess's script.
HALF_SAVE = """
import io, os, time, torch
_original_save = torch.save

def _half_save(obj, handle, *args, **kwargs):
    buffer = io.BytesIO()
    _original_save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    handle.write(data[: len(data) // 2])
    handle.flush()
    os.fsync(handle.fileno())
    time.sleep(3600)

torch.save = _half_save
"""
