"""Reading an annotation file of a registered format into one :class:`Record` type, with checks.

The formats (files, fields, splits) are in :mod:`ssan.data.formats`. (`img_path` and
`file_path` are accepted in every layout; when `ROOT/imgs` does not exist the image paths are
taken relative to ROOT.)

Validation rules, per record (a problem names the record index and the file):
- the record is a JSON object;
- `split`: a non-empty string, compared case-insensitively; `train` and `test` are kept,
  anything else becomes `val` (CUHK-PEDES, RSTPReid); ICFG-PEDES accepts only train/test;
- `id`: an integer from 0 to 2**63-1 (they become int64 tensors), or a string of such digits
  (booleans, floats and other strings are refused);
- `captions`: a non-empty list of non-blank strings (a single string is taken as one caption);
- image path: a non-empty relative path without `..` components, unique in the file;
- `processed_tokens` (optional): used when it is a list of token lists with one entry per
  caption; otherwise the captions are tokenized (and the record is counted as retokenized).
  Given tokens are used as the dataset gives them, lower-cased (the reference keeps
  hyphenated tokens such as `t-shirt` whole; it lower-cases when counting words but looks
  up the raw token, which drops capitalised tokens such as ICFG-PEDES's `A`: a bug we do not
  copy). With ``retokenize=True`` each given token is passed through
  :func:`ssan.data.vocab.tokenize` instead (`t-shirt` -> `t`, `shirt`). What either rule
  changed is counted in ``Annotations.token_changes``.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ssan.data._io import read_json
from ssan.data.formats import IMAGE_FIELDS, DatasetFormat, dataset_format
from ssan.data.given_tokens import parse_tokens
from ssan.errors import DataError

log = logging.getLogger(__name__)

_DIGITS = re.compile(r"[0-9]+")
MAX_ID = 2**63 - 1  # ids become int64 tensors in batches and indexes
_MAX_ID_DIGITS = 40  # longer digit strings are refused before int() (Python limits it to 4300 digits)


@dataclass(frozen=True)
class Record:
    """One annotated image.

    index: position in the annotation file; split: train / val / test; image: path relative to
    the image root (POSIX separators); id: raw identity; captions: the caption texts;
    tokens: one word list per caption.
    """

    index: int
    split: str
    image: str
    id: int
    captions: Tuple[str, ...]
    tokens: Tuple[Tuple[str, ...], ...]


@dataclass(frozen=True)
class Problem:
    """Why a record (``index``) or its image file (``file``) cannot be used."""

    index: int
    file: Optional[str]
    reason: str
    kind: str = "record"  # "record": the annotation is bad; "image": the image file is

    def to_dict(self) -> dict:
        return {"index": self.index, "file": self.file, "reason": self.reason}


@dataclass
class Annotations:
    """Everything read from one annotation file: the valid records and the problems found."""

    dataset: str
    annotation: Path
    image_root: Path
    records: List[Record] = field(default_factory=list)
    problems: List[Problem] = field(default_factory=list)
    retokenized: int = 0
    token_changes: Dict[str, int] = field(default_factory=lambda: {"lowercased": 0, "retokenized": 0, "blank": 0})


def check_dataset_name(dataset: str) -> str:
    """``dataset`` when it names a registered format (DataError listing the valid names otherwise)."""
    dataset_format(dataset)
    return dataset


def find_annotation(dataset: str, root: Path) -> Path:
    """The annotation file of ``dataset`` under ``root`` (first of the known names that exists)."""
    names = dataset_format(dataset).files
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a directory")
    for name in names:
        if (root / name).is_file():
            return root / name
    raise DataError(f"no {' or '.join(names)} in {root} (the {dataset} annotation file)")


def image_root_of(root: Path) -> Path:
    """``ROOT/imgs`` when it exists, else ROOT itself."""
    imgs = Path(root) / "imgs"
    return imgs if imgs.is_dir() else Path(root)


def read_annotations(dataset: str, root: Path, retokenize: bool = False) -> Annotations:
    """Read and validate ``dataset``'s annotation file under ``root``.

    File-level problems (missing file, bad bytes or JSON, not a list) raise DataError;
    record-level problems are collected in ``Annotations.problems``. ``retokenize``
    re-tokenises given ``processed_tokens`` (see the module docstring).
    """
    fmt = dataset_format(dataset)
    annotation = find_annotation(dataset, Path(root)).absolute()
    data = read_json(annotation)
    if not isinstance(data, list):
        raise DataError(f"{annotation}: expected a JSON list of records, got {_kind(data)}")
    if not data:
        raise DataError(f"{annotation}: the list of records is empty")
    result = Annotations(dataset, annotation, image_root_of(Path(root)).absolute())
    seen: Dict[str, int] = {}
    for index, raw in enumerate(data):
        record, reasons, retok = _parse_record(fmt, index, raw, retokenize, result.token_changes)
        image = record.image if record is not None else _raw_image(raw)
        if record is not None and record.image in seen:
            reasons.append(f"duplicate image path (also record {seen[record.image]})")
        if reasons:
            result.problems.append(Problem(index, image, "; ".join(reasons)))
            continue
        seen[record.image] = index
        result.records.append(record)
        result.retokenized += retok
    log.debug("%s: %d records, %d with problems", annotation.name, len(data), len(result.problems))
    return result


def _kind(value: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }.get(type(value), f"a {type(value).__name__}")


def _raw_image(raw: Any) -> Optional[str]:
    if isinstance(raw, dict):
        for name in IMAGE_FIELDS:
            if isinstance(raw.get(name), str) and raw[name].strip():
                return _printable(raw[name])
    return None


def _is_unicode(text: str) -> bool:
    """False for strings holding lone surrogates (JSON ``"\\ud800"``): they cannot be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """``text`` with lone surrogates escaped, safe to write to a UTF-8 report."""
    return text if _is_unicode(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _parse_record(
    fmt: DatasetFormat, index: int, raw: Any, retokenize: bool, changes: Dict[str, int]
) -> Tuple[Optional[Record], List[str], int]:
    if not isinstance(raw, dict):
        return None, [f"record is {_kind(raw)}, not an object"], 0
    reasons: List[str] = []
    split = _parse_split(fmt, raw, reasons)
    image = _parse_image(fmt, raw, reasons)
    identity = _parse_id(raw, reasons)
    captions = _parse_captions(raw, reasons)
    if reasons:
        return None, reasons, 0
    tokens, retok = parse_tokens(raw.get("processed_tokens"), captions, retokenize, changes)
    return Record(index, split, image, identity, tuple(captions), tokens), reasons, retok


def _parse_split(fmt: DatasetFormat, raw: dict, reasons: List[str]) -> str:
    value = raw.get("split")
    if value is None:
        reasons.append("missing field 'split'")
        return ""
    if not isinstance(value, str) or not value.strip():
        reasons.append(f"field 'split' must be a non-empty string, got {_short(value)}")
        return ""
    split = value.strip().lower()
    allowed = fmt.splits
    if allowed is not None and split not in allowed:
        reasons.append(f"split {_short(value)} is not one of {', '.join(allowed)}")
    return split if split in ("train", "test") else "val"


def _parse_image(fmt: DatasetFormat, raw: dict, reasons: List[str]) -> str:
    primary = fmt.image_field
    name = next((n for n in (primary, *IMAGE_FIELDS) if n in raw), None)
    if name is None:
        reasons.append(f"missing field {primary!r}")
        return ""
    value = raw[name]
    if not isinstance(value, str) or not value.strip():
        reasons.append(f"field {name!r} must be a non-empty string, got {_short(value)}")
        return ""
    path = value.strip()
    if not _is_unicode(path):
        reasons.append(f"image path {_short(value)} is not valid Unicode (lone surrogate)")
        return ""
    if "\x00" in path:
        reasons.append(f"image path {_short(value)} contains a NUL character")
        return ""
    if path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", path):
        reasons.append(f"image path {_short(value)} is absolute (must be relative to the image folder)")
        return ""
    normal = posixpath.normpath(path)
    if normal == ".." or normal.startswith("../") or "/../" in f"/{path}/":
        reasons.append(f"image path {_short(value)} leaves the image folder ('..')")
        return ""
    if normal in ("", "."):
        reasons.append(f"image path {_short(value)} names no file")
        return ""
    return normal


def _parse_id(raw: dict, reasons: List[str]) -> int:
    if "id" not in raw:
        reasons.append("missing field 'id'")
        return -1
    value = raw["id"]
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()) and len(value.strip()) <= _MAX_ID_DIGITS:
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID:
        return value
    reasons.append(f"field 'id' must be a non-negative integer (at most 2**63-1), got {_short(value)}")
    return -1


def _parse_captions(raw: dict, reasons: List[str]) -> List[str]:
    if "captions" not in raw:
        reasons.append("missing field 'captions'")
        return []
    value = raw["captions"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        reasons.append(f"field 'captions' must be a non-empty list of strings, got {_short(value)}")
        return []
    bad = [i for i, c in enumerate(value) if not isinstance(c, str) or not c.strip()]
    if bad:
        reasons.append(f"caption {bad[0]} is {'empty' if isinstance(value[bad[0]], str) else _kind(value[bad[0]])}")
        return []
    broken = [i for i, c in enumerate(value) if not _is_unicode(c)]
    if broken:
        reasons.append(f"caption {broken[0]} is not valid Unicode (lone surrogate)")
        return []
    return [c.strip() for c in value]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
