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
