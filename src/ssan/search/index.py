"""A gallery index on disk: FAISS index, exact features and metadata, in one folder.

Folder layout::

    meta.json          what was indexed and how (see below)
    features.npy       N x F float32, the flattened features (exact; re-used when images are added)
    index.faiss        the FAISS index (not written for the exact kind: rebuilt from features.npy)
    recall_queries.npy Q x F float32 query sample used to measure recall (approximate kinds)

``meta.json``: ``{"format": "ssan-index", "version": 1, "checkpoint": abs path,
"fingerprint": weights hash, "backend": encoders used, "encode": {"height", "width",
"max_length"}, "layout": {"terms", "widths", "dim"}, "index": {"kind", "params",
"recall@10", "recall_queries": "captions"|"images"|None}, "sources": [...],
"entries": [{"path": abs path, "name": path inside its gallery, "id": identity or null}],
"skipped": [{"path", "reason"}]}``. Row ``i`` of the FAISS index is entry ``i``; that
row number is the image id used by the web service.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ssan._files import PRIVATE_FILE_MODE, open_private, private_dir
from ssan.search import ann
from ssan.search.errors import GalleryIndexError
from ssan.search.files import is_image_name

log = logging.getLogger(__name__)

FORMAT = "ssan-index"
VERSION = 1
META_FILE = "meta.json"
FEATURES_FILE = "features.npy"
FAISS_FILE = "index.faiss"
QUERIES_FILE = "recall_queries.npy"


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(tmp_path)`` then rename over ``path`` (mode 0600)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_array(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open_private(tmp) as handle:
            np.save(handle, np.ascontiguousarray(array, dtype=np.float32))

    _atomic_write(path, write)


class GalleryIndex:
    """Flattened gallery features, their FAISS index and metadata.

    Build one with :meth:`build` (or ``ssan index``), open one with :meth:`load`.

    Args:
        meta: the metadata dict (format above).
        features: N x F float32 (an array or a read-only memory map).
        faiss_index: the FAISS index over ``features``; None builds it from ``meta``'s spec.
        queries: optional Q x F recall query sample.
    """

    def __init__(self, meta: dict, features: np.ndarray, faiss_index=None, queries: Optional[np.ndarray] = None):
        self.meta = meta
        self.features = features
        self.spec = ann.IndexSpec.from_dict(meta["index"]["params"])
        if faiss_index is None:
            faiss_index, self.spec = ann.build(np.asarray(features, dtype=np.float32), self.spec)
        ann.configure(faiss_index, self.spec)
        self.faiss_index = faiss_index
        self.queries = queries

    def __len__(self) -> int:
        return len(self.meta["entries"])

    def __repr__(self) -> str:
        return f"GalleryIndex({len(self)} images, kind={self.kind}, dim={self.layout['dim']})"

    @property
    def entries(self) -> list:
        return self.meta["entries"]

    @property
    def kind(self) -> str:
        return self.meta["index"]["kind"]

    @property
    def layout(self) -> dict:
        return self.meta["layout"]

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @classmethod
    def load(cls, directory: Union[str, Path]) -> GalleryIndex:
        """Open an index folder (features memory-mapped); GalleryIndexError on anything wrong."""
        directory = Path(directory)
        meta = read_meta(directory)
        files = data_files(meta)
        try:
            features = np.load(directory / files["features"], mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"index {directory}: cannot read {files['features']} ({exc})") from None
        if features.ndim != 2 or features.shape != (len(meta["entries"]), meta["layout"]["dim"]):
            raise GalleryIndexError(
                f"index {directory}: {files['features']} has shape {features.shape}, expected "
                f"({len(meta['entries'])}, {meta['layout']['dim']}); rebuild the index"
            )
        faiss_index = _read_faiss(directory, meta, len(features))
        queries_path = directory / files["queries"]
        queries = np.load(queries_path) if queries_path.is_file() else None
        return cls(meta, features, faiss_index, queries)

    def save(self, directory: Union[str, Path]) -> Path:
        """Write the folder (0700, files 0600) so that a kill at any moment leaves the old index or the new one.

        Data files get names unique to this write; ``meta.json``, which names them, is
        replaced last (atomically) and is the single commit point; the previous write's
        data files are removed only after it.
        """
        directory = private_dir(directory)
        tag = uuid.uuid4().hex[:12]
        files = {
            "features": f"features.{tag}.npy",
            "faiss": f"index.{tag}.faiss",
            "queries": f"recall_queries.{tag}.npy",
        }
        _save_array(directory / files["features"], self.features)
        if self.kind != "flat":
            _atomic_write(
                directory / files["faiss"], lambda tmp: ann.faiss_module().write_index(self.faiss_index, str(tmp))
            )
        if self.queries is not None:
            _save_array(directory / files["queries"], self.queries)
        self.meta = {**self.meta, "files": files}
        text = json.dumps(self.meta, indent=1, ensure_ascii=False) + "\n"
        _atomic_write(directory / META_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        _remove_stale_files(directory, set(files.values()))
        return directory

    def search(self, queries: np.ndarray, k: int, rows: Optional[np.ndarray] = None):
        """Top-k ``(scores, rows)`` (each Q x k', k' = min(k, N)) for Q x F query vectors.

        For the exact kind the scores are the SSAN similarities; IVF-PQ candidates are
        re-scored exactly from ``features.npy`` (see :class:`ssan.search.ann.IndexSpec`).
        ``rows`` (sorted row numbers, e.g. :meth:`TrackColumns.rows`) searches among those
        only, k' = min(k, len(rows)) (:func:`ssan.search.ann.search_rows`).
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.layout["dim"]:
            raise GalleryIndexError(f"query vectors are {queries.shape[1]} wide, the index holds {self.layout['dim']}")
        return ann.search(self.faiss_index, self.spec, queries, k, features=self.features, rows=rows)

    def check_fingerprint(self, fingerprint: str, source: str) -> None:
        """Refuse encoders whose weights differ from the ones the index was built with."""
        if fingerprint != self.fingerprint:
            raise GalleryIndexError(
                f"this index was built with checkpoint {self.meta['checkpoint']} (fingerprint {self.fingerprint}), "
                f"but {source} has fingerprint {fingerprint}: its features are not comparable; "
                "use the same checkpoint or build a new index"
            )

    def image_file(self, image_id: int) -> Optional[Path]:
        """The file of indexed image ``image_id``, or None when unknown or no longer safe to serve.

        The file must still be the regular image file recorded at indexing time: a path
        that now resolves elsewhere (a link swapped in later) is refused.
        """
        if not isinstance(image_id, int) or not 0 <= image_id < len(self):
            return None
        recorded = Path(self.entries[image_id]["path"])
        try:
            resolved = recorded.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if resolved != recorded or not resolved.is_file() or not is_image_name(resolved.name):
            return None
        return resolved


def read_meta(directory: Path) -> dict:
    """Read and check an index folder's ``meta.json``."""
    path = directory / META_FILE
    if not directory.exists():
        raise GalleryIndexError(f"index {directory} does not exist; build one with `ssan index --out {directory}`")
    if not path.is_file():
        raise GalleryIndexError(f"{directory} is not a gallery index (no {META_FILE}); build one with `ssan index`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GalleryIndexError(f"cannot read {path}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GalleryIndexError(f"{path} is not an ssan index description")
    if meta.get("version") != VERSION:
        raise GalleryIndexError(f"index {directory} has version {meta.get('version')!r}; this ssan reads {VERSION}")
    missing = [k for k in ("entries", "layout", "index", "fingerprint", "encode") if k not in meta]
    if missing:
        raise GalleryIndexError(f"{path} lacks {', '.join(missing)}")
    return meta


def data_files(meta: dict) -> dict:
    """Names of the index's data files (per-write names; older indexes used fixed ones)."""
    return {"features": FEATURES_FILE, "faiss": FAISS_FILE, "queries": QUERIES_FILE, **meta.get("files", {})}


def _remove_stale_files(directory: Path, keep: set) -> None:
    for pattern in ("features*.npy", "index*.faiss", "recall_queries*.npy"):
        for path in directory.glob(pattern):
            if path.name not in keep:
                path.unlink(missing_ok=True)


def _read_faiss(directory: Path, meta: dict, count: int):
    if meta["index"]["kind"] == "flat":
        return None
    name = data_files(meta)["faiss"]
    try:
        index = ann.faiss_module().read_index(str(directory / name))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
        raise GalleryIndexError(f"index {directory}: cannot read {name} ({first})") from None
    if index.ntotal != count:
        raise GalleryIndexError(f"index {directory}: {name} holds {index.ntotal} vectors, expected {count}")
    return index
