"""The hash chain of the audit log, and its verifier (``ssan audit verify LOG``).

Every line carries ``prev``, the ``hash`` of the line before it, and ``hash``, the SHA-256 of
``prev`` and the line's own content (every other field, as canonical JSON)::

    hash = sha256(prev + "\\n" + json.dumps(content, sort_keys=True, separators=(",", ":")))

The first line ever written has ``prev`` = 64 zeros. When the log is rotated the first line
of the new file chains to the last line of the previous one, so the files ``LOG.N`` ...
``LOG.1``, ``LOG`` (oldest first) form one chain. Changing any line, the last one included,
breaks its own hash; removing or inserting one breaks the link of the line after it. The
chain has no secret: someone who rewrites every line from the change onwards is caught only
by comparing with a hash kept elsewhere (``verify`` prints the last one for that). Lines
written before the chain existed (no ``hash``) are accepted at the start of the oldest file.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

GENESIS = "0" * 64
_TAIL_BYTES = 64 * 1024


def canonical(content: dict) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def line_hash(prev: str, content: dict) -> str:
    """The ``hash`` of a line whose other fields are ``content`` and whose ``prev`` is ``prev``."""
    return hashlib.sha256(f"{prev}\n{canonical(content)}".encode()).hexdigest()


def seal(record: dict, prev: str) -> bytes:
    """``record`` as one chained JSON line (bytes, newline included)."""
    content = {k: v for k, v in record.items() if k not in ("prev", "hash")}
    sealed = {**content, "prev": prev, "hash": line_hash(prev, content)}
    return (json.dumps(sealed, ensure_ascii=False, separators=(", ", ": ")) + "\n").encode("utf-8")


def link_of(raw: bytes) -> str:
    """What the next line's ``prev`` must be: the line's ``hash`` (an unchained line: its SHA-256)."""
    try:
        record = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("hash"), str):
        return record["hash"]
    return hashlib.sha256(raw.rstrip(b"\n")).hexdigest()


def _last_line(path: Path) -> Optional[bytes]:
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                return None
            handle.seek(max(0, info.st_size - _TAIL_BYTES))
            tail = handle.read(_TAIL_BYTES)
    except OSError:
        return None
    lines = [line for line in tail.split(b"\n") if line.strip()]
    return lines[-1] if lines else None


def last_link(path: Path) -> str:
    """The ``prev`` for the next line of the log ``path``: its last line's link, else ``PATH.1``'s, else GENESIS."""
    for candidate in (path, path.with_name(f"{path.name}.1")):
        line = _last_line(candidate)
        if line is not None:
            return link_of(line)
    return GENESIS


def log_files(path: Path) -> List[Path]:
    """The files of a rotated log, oldest first: ``PATH.N`` ... ``PATH.1``, ``PATH`` (those that exist)."""
    rotated, number = [], 1
    while path.with_name(f"{path.name}.{number}").is_file():
        rotated.append(path.with_name(f"{path.name}.{number}"))
        number += 1
    return list(reversed(rotated)) + ([path] if path.is_file() else [])


@dataclass
class _Line:
    where: str  # FILE:LINE
    raw: bytes
    record: Optional[dict]


@dataclass
class Verdict:
    """The result of :func:`verify`: ``ok``, the lines checked, the first problem and the last hash."""

    ok: bool
    lines: int
    files: List[str]
    problem: str = ""
    last_hash: str = ""


def _read_lines(files: List[Path]) -> List[_Line]:
    out = []
    for path in files:
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                record = None
            out.append(_Line(f"{path}:{number}", raw, record if isinstance(record, dict) else None))
    return out


def _sealed_ok(line: _Line) -> bool:
    record = line.record
    if record is None or not isinstance(record.get("hash"), str) or not isinstance(record.get("prev"), str):
        return False
    content = {k: v for k, v in record.items() if k not in ("prev", "hash")}
    return line_hash(record["prev"], content) == record["hash"]


def _problem(lines: List[_Line], i: int) -> str:
    """What is wrong at line ``i`` (whose hash or link failed), naming the first line concerned."""
    line = lines[i]
    before = link_of(lines[i - 1].raw) if i > 0 else None
    after = lines[i + 1].record if i + 1 < len(lines) else None
    follows_before = after is not None and after.get("prev") == before
    if not _sealed_ok(line):
        if follows_before:
            return f"{line.where}: inserted (the next line chains to the line before it)"
        return f"{line.where}: altered (its hash does not match its content)"
    if i >= 2 and line.record.get("prev") == link_of(lines[i - 2].raw):
        return f"{lines[i - 1].where}: inserted (the next line chains to the line before it)"
    return f"{line.where}: its prev does not match the line before it (a line was removed there, or rewritten)"


def verify(path) -> Verdict:
    """Check the chain of the log ``path`` and its rotated files; the first broken line is named."""
    path = Path(path)
    files = log_files(path)
    lines = _read_lines(files)
    names = [str(f) for f in files]
    chained = False
    for i, line in enumerate(lines):
        unchained = line.record is not None and "hash" not in line.record and "prev" not in line.record
        if unchained and not chained:
            continue  # written before the chain existed
        chained = True
        linked = i == 0 or lines[i - 1].record is None or line.record is None
        linked = linked or line.record.get("prev") == link_of(lines[i - 1].raw)
        if not _sealed_ok(line) or not linked:
            return Verdict(False, len(lines), names, _problem(lines, i))
    last = link_of(lines[-1].raw) if lines else GENESIS
    return Verdict(True, len(lines), names, last_hash=last)
