"""RetrievalEvaluator: one prepared split, evaluated as often as needed (every epoch of training).

The protocol is ``docs/datasets-and-metrics.md`` section 2 (see :mod:`ssan.evaluation.retrieval`).
What the evaluator adds to a one-shot :func:`ssan.evaluation.evaluate`:

- its loaders are built once; with ``num_workers`` > 0 the gallery's worker processes stay alive
  between evaluations (``persistent``), instead of being forked for every epoch;
- the features stay on the model's device and the similarity chunks and rank counting run there;
- under DDP every process encodes a contiguous share of the gallery and of the queries, the shares
  are gathered, and process 0 computes the figures (the others get None): an evaluation takes
  1/W of the encoding time instead of keeping W-1 processes waiting for one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
from torch import nn

from ssan import distributed
from ssan.data.transforms import build_transforms
from ssan.devices import Device, resolve_device
from ssan.errors import DataError
from ssan.evaluation.metrics import DEFAULT_KS
from ssan.evaluation.retrieval import _check_split, encode_loader, evaluate_features, gallery_step, query_step

log = logging.getLogger(__name__)


class RetrievalEvaluator:
    """Text-to-image (and optionally image-to-text) metrics of a model on one split.

    Args:
        prepared: a :class:`ssan.data.PreparedDataset`.
        split: the split to evaluate.
        height, width: evaluation image size; max_length: caption truncation (None: the prepared value).
        batch_size: encoding batch; num_workers: gallery image-loading processes.
        vocab: the model's vocabulary (None: the prepared one; another one re-encodes the queries).
        i2t: also image -> text; memory_budget_mb: similarity chunk bound; ks: Rank-k cut-offs.
        persistent: keep the gallery workers alive between calls.
        channels_last: feed the images channels-last.
        transform: the gallery transform, ``uint8`` pixels (None: resize to ``height x width``).
    """

    def __init__(
        self,
        prepared,
        split: str = "test",
        *,
        height: int = 384,
        width: int = 128,
        max_length: Optional[int] = None,
        batch_size: int = 128,
        num_workers: int = 0,
        vocab=None,
        i2t: bool = False,
        memory_budget_mb: float = 512,
        ks: Sequence[int] = DEFAULT_KS,
        progress: bool = True,
        persistent: bool = True,
        channels_last: bool = False,
        transform=None,
    ) -> None:
        _check_split(prepared, split)
        records = prepared.records(split)
        if not records:
            raise DataError(f"split {split!r} of {prepared.directory} has no records")
        self.prepared, self.split = prepared, split
        self.max_length = max_length or int(prepared.summary.get("max_length", 100))
        self.queries, self.vocabulary_report = _query_records(prepared, records, vocab, self.max_length)
        self.records = records
        self.settings = {"i2t": i2t, "memory_budget_mb": memory_budget_mb, "ks": ks}
        self.progress, self.channels_last = progress, channels_last
        self._loaders = _Loaders(
            records,
            self.queries,
            prepared.image_root,
            transform or build_transforms(height, width, train=False, uint8=True),
            self.max_length,
            batch_size,
            num_workers,
            persistent,
        )

    def __call__(self, model: nn.Module, device: torch.device) -> Optional[dict]:
        """The figures (on process 0; None on the others). ``model`` is put back in its mode after."""
        model.to(device)
        pin = device.type == "cuda"
        gallery = encode_loader(
            model,
            self._loaders.gallery(pin),
            "gallery",
            self.progress,
            gallery_step(device, self.channels_last),
            keep_on_device=True,
        )
        queries = encode_loader(
            model, self._loaders.queries(), "queries", self.progress, query_step(device), keep_on_device=True
        )
        gallery, queries = _gather(gallery, device), _gather(queries, device)

        def figures() -> dict:
            results = evaluate_features(
                gallery["feats"], queries["feats"], queries["ids"], gallery["ids"], device=device, **self.settings
            )
            extra = {"vocabulary": self.vocabulary_report} if self.vocabulary_report is not None else {}
            return {**results, "split": self.split, "dataset": self.prepared.name, **extra}

        return distributed.run_on_main(figures, f"the {self.split} evaluation")


class _Loaders:
    """This process's share of the gallery and query loaders, built on first use and kept."""

    def __init__(self, records, queries, image_root, transform, max_length, batch_size, num_workers, persistent):
        self.args = (records, queries, image_root, transform, max_length, batch_size, num_workers, persistent)
        self._gallery = self._queries = None

    def gallery(self, pin: bool):
        from ssan.data import GalleryDataset, make_loader

        if self._gallery is None:
            records, _, root, transform, _, batch, workers, persistent = self.args
            share = _share(records)
            self._gallery = make_loader(
                GalleryDataset(share, root, transform),
                batch,
                num_workers=workers,
                pin_memory=pin,
                persistent=persistent,
            )
        return self._gallery

    def queries(self):
        from ssan.data import QueryDataset, make_loader

        if self._queries is None:
            _, queries, _, _, max_length, batch, _, _ = self.args
            self._queries = make_loader(QueryDataset(_share(queries), max_length), batch)
        return self._queries


def _share(items: List) -> List:
    """This process's contiguous share of ``items`` (all of them in a single process)."""
    info = distributed.current()
    start, stop = ((len(items) * info.rank) // info.world_size, (len(items) * (info.rank + 1)) // info.world_size)
    return items[start:stop]


def _gather(encoded: dict, device: torch.device) -> dict:
    """Every process's share of ``encoded``, concatenated in rank order (on ``device``)."""
    if not distributed.is_active():
        return encoded
    out = {"feats": {term: _gather_rows(value, device) for term, value in encoded["feats"].items()}}
    out["ids"] = _gather_rows(encoded["ids"], device).cpu()
    return out


def _gather_rows(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """All-gather rows of unequal counts: pad to the largest share, gather, trim."""
    import torch.distributed as dist

    comm = distributed.communication_device(device)
    count = torch.tensor([tensor.shape[0]], device=comm)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    padded = torch.zeros((max(sizes), *tensor.shape[1:]), dtype=tensor.dtype, device=comm)
    padded[: tensor.shape[0]] = tensor.to(comm)
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes)]).to(device)


def _query_records(prepared, records: list, vocab, max_length: int) -> tuple:
    """(records whose captions are the queries, re-encoding report or None).

    A vocabulary with ``encode_records`` (CLIP's tokenizer) encodes the captions' text itself.
    """
    if hasattr(vocab, "encode_records"):
        return vocab.encode_records(records, max_length), None
    if vocab is None or vocab == prepared.vocab:
        return records, None
    from ssan.data.prepared import reencode_records

    queries, report = reencode_records(records, prepared.vocab, vocab, max_length)
    if not queries:
        raise DataError(f"no caption of {prepared.directory} has a word of the model's vocabulary ({len(vocab)} words)")
    if not report["exact"]:
        log.warning(
            "%s was prepared before caption words were kept: words unknown to its own vocabulary are "
            "lost; re-run `ssan prepare` for an exact cross-domain evaluation",
            prepared.directory,
        )
    log.debug(  # the figures are in results["vocabulary"]; `ssan test` prints them once, with the table
        "cross-vocabulary evaluation: %d of %d query words unknown to the model (dropped), %d caption(s) "
        "left without a word",
        report["unknown_words"],
        report["query_words"],
        report["dropped_captions"],
    )
    return queries, report


def evaluate(
    model: nn.Module,
    prepared,
    split: str = "test",
    device: Device = None,
    batch_size: int = 128,
    num_workers: int = 0,
    i2t: bool = False,
    height: int = 384,
    width: int = 128,
    max_length: Optional[int] = None,
    memory_budget_mb: float = 512,
    ks: Sequence[int] = DEFAULT_KS,
    progress: bool = True,
    vocab=None,
    transform=None,
) -> dict:
    """Evaluate ``model`` on one split of a prepared dataset, once (see :class:`RetrievalEvaluator`).

    Args:
        model: an SSAN model; moved to ``device`` and put in eval mode for the duration (its
            train/eval mode is restored afterwards).
        prepared: a :class:`ssan.data.PreparedDataset`.
        split: ``test``, ``val``... (one of ``prepared.splits``).
        height, width: the evaluation image size (the model's training size).
        max_length: captions are truncated to this many tokens (None: the prepared value).
        vocab: the model's :class:`ssan.data.Vocabulary` (None: the prepared one). When it
            differs (cross-domain evaluation), the captions' words are re-encoded with it,
            unknown words dropped (see :func:`ssan.data.prepared.reencode_records`).

    Returns:
        The :func:`evaluate_features` dict plus ``"split"`` and ``"dataset"``, and
        ``"vocabulary"`` (what re-encoding the queries did) when ``vocab`` differs.
    """
    evaluator = RetrievalEvaluator(
        prepared,
        split,
        height=height,
        width=width,
        max_length=max_length,
        batch_size=batch_size,
        num_workers=num_workers,
        vocab=vocab,
        i2t=i2t,
        memory_budget_mb=memory_budget_mb,
        ks=ks,
        progress=progress,
        persistent=False,
        transform=transform,
    )
    return evaluator(model, resolve_device(device))


def evaluate_checkpoint(
    checkpoint_path: Union[str, Path],
    data_dir: Union[str, Path],
    split: str = "test",
    device: Device = None,
    i2t: bool = False,
    batch_size: Optional[int] = None,
    num_workers: int = 0,
    memory_budget_mb: float = 512,
    progress: bool = True,
) -> dict:
    """Load a checkpoint and evaluate it on a prepared dataset, in one call.

    The image size, caption length and evaluation batch size come from the checkpoint's config.
    The queries are encoded with the checkpoint's own vocabulary: a dataset prepared with
    another one (cross-domain: train on CUHK-PEDES, test on ICFG-PEDES) is re-encoded, its
    unknown words dropped and counted in ``results["vocabulary"]``.

    Returns:
        The :func:`evaluate` dict plus ``"checkpoint"`` (path) and ``"epoch"``.
    """
    from ssan.checkpoint import load_model
    from ssan.data import load_prepared
    from ssan.models.families import gallery_transform

    prepared = load_prepared(data_dir)  # (the engine imports evaluation, never at module level the reverse)
    _check_split(prepared, split)
    device = resolve_device(device)
    model, vocab, info = load_model(checkpoint_path, device=device)
    data_config = (info.get("config") or {}).get("data", {})
    height, width = int(data_config.get("height", 384)), int(data_config.get("width", 128))
    results = evaluate(
        model,
        prepared,
        split=split,
        device=device,
        i2t=i2t,
        num_workers=num_workers,
        batch_size=batch_size or int(data_config.get("eval_batch_size", 128)),
        height=height,
        width=width,
        max_length=int(data_config.get("max_length", 100)),
        memory_budget_mb=memory_budget_mb,
        progress=progress,
        vocab=vocab,
        transform=gallery_transform(info["arch"], height, width, uint8=True),
    )
    return {**results, "checkpoint": str(checkpoint_path), "epoch": info.get("epoch")}
