"""Building and extending gallery indexes (``ssan index``).

A gallery is (a) a folder of images, searched recursively, or (b) a split of a
prepared dataset, which keeps the identities. Adding to an existing index
encodes only the paths it does not hold yet; an index is only ever extended
with the checkpoint it was built with. Under ``torchrun`` every rank encodes
its share of the images and rank 0 writes the index.

Recall of an approximate index is measured against the exact one on a sample
of queries: the split's own captions for a prepared split, otherwise (a folder
has no captions) the features of a sample of gallery images, used as queries.
The sample is stored with the index so later additions are measured the same way.

Encoded batches are kept in ``OUT/.partial`` as the job goes (:mod:`ssan.search.journal`): an
interrupted build, rerun or continued with ``add``, encodes only the rest, and the index in
``OUT`` is unchanged until the job completes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

from ssan.distributed import current
from ssan.errors import SsanError
from ssan.models.families import describe_encoder
from ssan.search import ann
from ssan.search.encode import encode_images_distributed, encode_token_lists
from ssan.search.encoders import image_transform, load_encoders
from ssan.search.errors import GalleryIndexError
from ssan.search.files import find_images
from ssan.search.index import FORMAT, META_FILE, VERSION, GalleryIndex
from ssan.search.journal import EncodingJournal

log = logging.getLogger(__name__)

RECALL_K = 10


def _gallery_from_folder(folder: Union[str, Path]):
    """(candidates, refused, source, captions=None): candidates are {"path", "name", "id"}."""
    root = Path(folder).expanduser().resolve()
    paths, refused = find_images(root)
    candidates = [{"path": str(p), "name": p.relative_to(root).as_posix(), "id": None} for p in paths]
    return candidates, refused, {"type": "images", "root": str(root)}, None


def _gallery_from_prepared(data: Union[str, Path], split: str):
    from ssan.data import load_prepared

    prepared = load_prepared(data)
    if split not in prepared.splits:
        raise SsanError(f"prepared dataset {data} has no split {split!r}; present: {', '.join(prepared.splits)}")
    root = Path(prepared.image_root).resolve()
    candidates, captions = [], []
    for record in prepared.records(split):
        path = (root / record["image"]).resolve()
        candidates.append({"path": str(path), "name": record["image"], "id": int(record["id"])})
        captions.extend(record.get("captions") or [])
    source = {"type": "prepared", "data": str(Path(data).resolve()), "split": split, "root": str(root)}
    return candidates, [], source, captions


def open_existing(out_dir: Path, add: bool, overwrite: bool) -> Optional[GalleryIndex]:
    """The index already in ``out_dir`` when adding to it; None when there is none or it is replaced."""
    if not (out_dir / META_FILE).exists():
        return None
    if add:
        return GalleryIndex.load(out_dir)
    if overwrite:
        return None
    raise GalleryIndexError(
        f"{out_dir} already holds an index: pass --add to add images to it or --overwrite to replace it"
    )


def recall_sample(existing, encoders, info, captions, features, num_queries: int, seed: int):
    """(Q x F queries, their kind) for measuring recall; re-uses the stored sample when adding."""
    if existing is not None and existing.queries is not None:
        return np.asarray(existing.queries), existing.meta["index"].get("recall_queries")
    if captions:
        token_lists = [ids for ids in (info.vocab.encode(c)[0] for c in captions) if ids]
        if token_lists:
            chosen = ann.sample_rows(len(token_lists), num_queries, seed)
            picked = [token_lists[i] for i in chosen]
            return encode_token_lists(encoders, picked, info.max_length), "captions"
    rows = ann.sample_rows(len(features), num_queries, seed)
    return np.asarray(features[rows], dtype=np.float32), "images"


def measure_recall(index: GalleryIndex, queries: np.ndarray, k: int = RECALL_K) -> float:
    """recall@k of the index's search (as used by the searcher) against the exact top-k."""
    exact = ann.exact_top_k(np.asarray(index.features, dtype=np.float32), queries, k)
    _, approx = index.search(queries, k)
    return ann.recall_at_k(exact, approx)


def warn_skipped(skipped: list) -> None:
    """One warning listing (the first 20 of) the ``(path, reason)`` pairs skipped."""
    if skipped:
        listing = "; ".join(f"{path} ({reason})" for path, reason in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        log.warning("skipped %d unreadable or refused file(s): %s%s", len(skipped), listing, more)


def _encode_new(encoders, info, candidates, batch_size, num_workers, progress, journal):
    """Encode the candidates' images; with a journal, only those it lacks, each batch kept in it.

    Without one (under torchrun) every rank encodes its share and rank 0 gathers them.
    """
    todo = [Path(c["path"]) for c in candidates if journal is None or c["path"] not in journal]
    options = {"batch_size": batch_size, "num_workers": num_workers, "progress": progress}
    if journal is not None:
        options["on_batch"] = journal.record
    encoded = encode_images_distributed(encoders, todo, image_transform(info), **options)
    return encoded if journal is None else journal.results([c["path"] for c in candidates])


def _journal(out_dir: Path, info) -> Optional[EncodingJournal]:
    """The batches an interrupted build by the same encoders kept (None under torchrun: not kept)."""
    if current().enabled:
        return None
    key = {"fingerprint": info.fingerprint, "backend": info.backend, "height": info.height, "width": info.width}
    return EncodingJournal.open(out_dir, key)


def index_meta(info, layout, spec, sources, entries, skipped) -> dict:
    """``meta.json`` of an index (format in :mod:`ssan.search.index`); recall is filled in later."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "checkpoint": info.checkpoint,
        "fingerprint": info.fingerprint,
        "encoder": describe_encoder(info.arch),
        "backend": info.backend,
        "encode": {"height": info.height, "width": info.width, "max_length": info.max_length},
        "layout": layout,
        "index": {"kind": spec.kind, "params": spec.to_dict(), "recall@10": None, "recall_queries": None},
        "sources": sources,
        "entries": entries,
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
    }


def build_index(
    out_dir: Union[str, Path],
    checkpoint: Optional[Union[str, Path]],
    images: Optional[Union[str, Path]] = None,
    data: Optional[Union[str, Path]] = None,
    split: str = "test",
    spec: Optional[ann.IndexSpec] = None,
    add: bool = False,
    overwrite: bool = False,
    backend: str = "torch",
    onnx_dir: Optional[Union[str, Path]] = None,
    device: str = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    recall_queries: int = 500,
    progress: bool = True,
    seed: int = 0,
) -> Optional[GalleryIndex]:
    """Encode a gallery (folder ``images`` or prepared ``data``/``split``) into ``out_dir``.

    Args:
        out_dir: index folder (created).
        checkpoint: trained SSAN checkpoint (torch backend); with ``backend="onnx"`` the
            export folder ``onnx_dir`` supplies the encoders instead.
        spec: index kind and parameters; None keeps an existing index's, else exact.
        add: extend the index in ``out_dir`` (existing paths are skipped, same checkpoint only).
        overwrite: replace an existing index instead of refusing.
        recall_queries: size of the query sample for recall@10 of approximate kinds.
    Returns:
        the index (None on ranks other than 0 of a ``torchrun`` launch; join the process group
        first, with :func:`ssan.distributed.init_distributed`, as ``ssan index`` does).
    """
    if (images is None) == (data is None):
        raise SsanError("give exactly one gallery: a folder of images or a prepared dataset")
    from ssan.devices import resolve_device

    dist_info = current()  # under torchrun, the entry point has joined the process group
    device = str(resolve_device(device, dist_info.local_rank if dist_info.enabled else None))
    out_dir = Path(out_dir)
    existing = open_existing(out_dir, add, overwrite)
    encoders, info = load_encoders(backend, checkpoint=checkpoint, onnx_dir=onnx_dir, device=device)
    if existing is not None:
        existing.check_fingerprint(info.fingerprint, f"checkpoint {info.checkpoint}")
    gallery = _gallery_from_folder(images) if images is not None else _gallery_from_prepared(data, split)
    candidates, refused, source, captions = gallery
    known = {e["path"] for e in existing.entries} if existing is not None else set()
    new = [c for c in candidates if c["path"] not in known]
    if existing is not None:
        log.info("%d image(s) already indexed, %d new", len(candidates) - len(new), len(new))
    journal = _journal(out_dir, info)
    encoded = _encode_new(encoders, info, new, batch_size, num_workers, progress, journal)
    if not current().is_main:
        return None
    skipped = refused + encoded["failed"]
    warn_skipped(skipped)
    index = _assemble(
        out_dir, existing, info, encoders, new, encoded, source, captions, skipped, spec, recall_queries, seed
    )
    if journal is not None:
        journal.remove()  # the job completed: the index holds everything the batches did
    return index


def _assemble(
    out_dir, existing, info, encoders, new, encoded, source, captions, skipped, spec, recall_queries, seed
) -> GalleryIndex:
    new_entries = [new[i] for i in encoded["kept"]]
    if existing is None and not new_entries:
        raise GalleryIndexError(f"no readable images in the gallery ({len(skipped)} skipped); nothing to index")
    if existing is not None and not new_entries:
        log.info("nothing new to add; %s is unchanged", out_dir)
        return existing
    layout = encoded["layout"]
    if existing is not None and existing.layout != layout:
        raise GalleryIndexError(f"new features have layout {layout}, the index holds {existing.layout}")
    old = np.asarray(existing.features, dtype=np.float32) if existing is not None else None
    features = encoded["features"] if old is None else np.concatenate([old, encoded["features"]])
    spec = spec or (existing.spec if existing is not None else ann.IndexSpec())
    faiss_index, spec = ann.build(features, spec)
    entries = (existing.entries if existing is not None else []) + new_entries
    sources = (existing.meta["sources"] if existing is not None else []) + [source]
    meta = index_meta(info, layout, spec, sources, entries, skipped)
    index = GalleryIndex(meta, features, faiss_index)
    if spec.kind != "flat":
        queries, kind = recall_sample(existing, encoders, info, captions, features, recall_queries, seed)
        index.queries = queries
        meta["index"].update({"recall@10": measure_recall(index, queries), "recall_queries": kind})
        log.debug(
            "%s index: recall@10 = %.4f against the exact index (%d queries: %s)",
            spec.kind,
            meta["index"]["recall@10"],
            len(queries),
            kind,
        )
    index.save(out_dir)
    log.debug("indexed %d image(s) into %s (%s, width %d)", len(entries), out_dir, spec.kind, layout["dim"])
    return index
