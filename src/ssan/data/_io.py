"""File helpers shared by the data modules: strict JSON reading and atomic directory writes."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Union

from ssan.errors import DataError

log = logging.getLogger(__name__)


def read_json(path: Union[str, Path]) -> Any:
    """Parse a UTF-8 JSON file (a BOM is allowed).

    Raises DataError naming the file and, for bad bytes or syntax, the line and column.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line} column {column})"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise DataError(f"{path}: invalid JSON: {str(exc).split(';')[0]}") from None
    except RecursionError:
        raise DataError(f"{path}: invalid JSON: nested too deeply") from None


def dumps(value: Any) -> str:
    """Compact, deterministic JSON (sorted keys are NOT used: key order is the writer's)."""
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


@contextmanager
def atomic_directory(out: Union[str, Path], may_replace: Callable[[Path], bool]) -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``out``; on success it becomes ``out``.

    ``may_replace(out)`` is called when ``out`` already exists; it must return True to allow
    replacing it (or raise). On any exception the temporary directory is removed and ``out``
    is untouched, so an interrupted run never leaves a half-written ``out``.
    """
    out = Path(out).absolute()
    if out.exists() and not may_replace(out):
        raise DataError(f"{out} already exists")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / "previous")
    try:
        os.replace(tmp, out)
    except OSError:
        os.replace(old / "previous", out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    log.debug("replaced %s", out)
