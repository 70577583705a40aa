"""Reading a prepared dataset directory (the output of :func:`ssan.data.prepare_dataset`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple, Union

from ssan.data._io import read_json
from ssan.data.vocab import Vocabulary
from ssan.errors import DataError

log = logging.getLogger(__name__)

RECORD_KEYS = ("image", "id", "label", "captions", "tokens")


class PreparedDataset:
    """A prepared dataset: summary, vocabulary, image root and per-split records.

    Args:
        directory: the prepared directory (``summary.json``, ``vocab.json``, ``<split>.jsonl``).
    Records are dicts ``{"image", "id", "label", "captions", "tokens", "words"}`` (see
    docs/architecture.md; ``words``, each caption's words before the vocabulary lookup, is absent
    from directories prepared by versions before 0.2), read lazily and cached.
    """

    def __init__(self, directory: Union[str, Path]):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise DataError(f"prepared dataset {self.directory} is not a directory (run `ssan prepare` first)")
        if not (self.directory / "summary.json").is_file():
            raise DataError(_not_prepared(self.directory))
        self.summary = _read_summary(self.directory / "summary.json")
        self.vocab = Vocabulary.load(self.directory / "vocab.json")
        if len(self.vocab) != self.summary["vocab_size"]:
            raise DataError(
                f"{self.directory}: vocab.json has {len(self.vocab)} words, "
                f"summary.json says {self.summary['vocab_size']}"
            )
        self.image_root = Path(self.summary["image_root"])
        if not self.image_root.is_dir():
            log.warning("image folder %s of %s does not exist", self.image_root, self.directory)
        self.splits: List[str] = [s for s in ("train", "val", "test") if s in self.summary["splits"]]
        for split in self.splits:
            if not (self.directory / f"{split}.jsonl").is_file():
                raise DataError(f"{self.directory}: {split}.jsonl is missing")
        self._cache: Dict[str, List[dict]] = {}

    @property
    def name(self) -> str:
        return self.summary["dataset"]

    @property
    def num_classes(self) -> int:
        return int(self.summary["num_classes"])

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.summary['splits'][s]['images']}" for s in self.splits)
        return f"PreparedDataset({self.name!r}, {counts}, vocab={len(self.vocab)}, classes={self.num_classes})"

    def records(self, split: str) -> List[dict]:
        """The records of ``split`` (one per image), in annotation-file order."""
        if split not in self.splits:
            raise DataError(f"{self.directory} has no {split!r} split; present: {', '.join(self.splits)}")
        if split not in self._cache:
            self._cache[split] = _read_records(self.directory / f"{split}.jsonl", len(self.vocab))
        return self._cache[split]


def load_prepared(directory: Union[str, Path]) -> PreparedDataset:
    """Open a prepared dataset directory; DataError naming the file when something is missing or bad."""
    return PreparedDataset(directory)


def _not_prepared(directory: Path) -> str:
    """Why ``directory`` (no summary.json) is not a prepared dataset, and which folder is."""
    from ssan.data.formats import DATASET_FORMATS
    from ssan.data.prepare import DEFAULT_OUT

    if (directory / DEFAULT_OUT / "summary.json").is_file():
        return f"{directory} is a dataset folder, not a prepared one: use its prepared folder {directory / DEFAULT_OUT}"
    for name, layout in DATASET_FORMATS.items():
        found = next((f for f in layout.files if (directory / f).is_file()), None)
        if found:
            return (
                f"{directory} is a raw {name} folder ({found}), not a prepared one: run "
                f"`ssan prepare --dataset {name} --root {directory}`, then use {directory / DEFAULT_OUT}"
            )
    return f"{directory / 'summary.json'} is missing (not a prepared dataset; run `ssan prepare` first)"


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"{path} is missing (not a prepared dataset; run `ssan prepare` first)")
    summary = read_json(path)
    if not isinstance(summary, dict) or summary.get("format") != "ssan-prepared":
        raise DataError(f"{path} is not an ssan-prepared summary")
    if summary.get("version") != 1:
        raise DataError(f"{path}: unsupported version {summary.get('version')!r} (expected 1)")
    for key in ("dataset", "image_root", "vocab_size", "num_classes", "splits"):
        if key not in summary:
            raise DataError(f"{path}: missing key {key!r}")
    if not isinstance(summary["splits"], dict):
        raise DataError(f"{path}: 'splits' must be an object")
    return summary


def _read_records(path: Path, vocab_size: int) -> List[dict]:
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    records.append(_check_record(path, number, line, vocab_size))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return records


def _check_record(path: Path, number: int, line: str, vocab_size: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number}: invalid JSON ({exc.msg})") from None
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        raise DataError(f"{path} line {number}: expected an object with keys {', '.join(RECORD_KEYS)}")
    tokens = record["tokens"]
    if (
        not isinstance(tokens, list)
        or len(tokens) != len(record["captions"])
        or not all(
            isinstance(t, list) and t and all(isinstance(i, int) and 0 < i < vocab_size for i in t) for t in tokens
        )
    ):
        raise DataError(f"{path} line {number}: 'tokens' must hold one non-empty list of vocabulary ids per caption")
    words = record.get("words")
    if words is not None and (
        not isinstance(words, list)
        or len(words) != len(tokens)
        or not all(isinstance(w, list) and all(isinstance(x, str) for x in w) for w in words)
    ):
        raise DataError(f"{path} line {number}: 'words' must hold one list of words per caption")
    return record


def reencode_records(
    records: List[dict], source_vocab: Vocabulary, vocab: Vocabulary, max_length: int
) -> Tuple[List[dict], dict]:
    """``records`` with their captions' ``tokens`` re-encoded with another ``vocab``.

    For evaluating a model on a dataset prepared with another vocabulary (cross-domain):
    each caption's words (the prepared ``words``; for directories prepared before they were
    kept, the words decoded from ``tokens`` with ``source_vocab``, which has already lost the
    words unknown to it) are looked up in ``vocab``; unknown words are dropped as the
    reference does, and a caption left without a word is dropped from the queries.

    Returns:
        ``(records, report)``: the records that keep at least one caption (the queries; the
        gallery is still every record of the split), and ``{"query_words", "unknown_words",
        "dropped_captions", "exact"}`` (``exact`` false when words had to be decoded).
    """
    report = {"query_words": 0, "unknown_words": 0, "dropped_captions": 0, "exact": True}
    out = []
    for record in records:
        words = record.get("words")
        if words is None:
            report["exact"] = False
            words = [source_vocab.decode(ids) for ids in record["tokens"]]
        captions, tokens, kept = [], [], []
        for caption, caption_words in zip(record["captions"], words):
            ids, unknown = vocab.encode_tokens(caption_words)
            report["query_words"] += len(caption_words)
            report["unknown_words"] += len(unknown)
            if not ids:
                report["dropped_captions"] += 1
                continue
            captions.append(caption)
            tokens.append(ids[:max_length])
            kept.append(caption_words)
        if captions:
            out.append({**record, "captions": captions, "tokens": tokens, "words": kept})
    return out, report
