"""Pictures: retrieval sheets, training curves and word-attention heat maps.

Everything is drawn with matplotlib's non-interactive ``Agg`` backend, so it
works on machines without a display. Each function writes one PNG (or any
format matplotlib infers from the suffix) and returns its path.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ssan._extras import require
from ssan.errors import SsanError

log = logging.getLogger(__name__)

MATCH_COLOUR = "#1a9641"  # green frame: the result has the query's identity
MISS_COLOUR = "#d7191c"  # red frame: it does not
CAPTION_WIDTH = 34  # characters per line of a wrapped caption

ImageLike = Union[str, Path, Image.Image]


def _pyplot():
    """matplotlib.pyplot on the Agg backend (imported lazily: matplotlib is an extra)."""
    matplotlib = require("matplotlib", "pictures need matplotlib", "viz")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_path: Union[str, Path]) -> Path:
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    log.debug("wrote %s", out)
    return out


def _load_picture(item: ImageLike) -> Optional[Image.Image]:
    """A PIL image from a path (via the safe loader) or an image; None when unreadable."""
    if isinstance(item, Image.Image):
        return item.convert("RGB")
    from ssan.data.images import load_rgb

    try:
        return load_rgb(item)
    except (SsanError, OSError, ValueError) as exc:
        log.warning("retrieval sheet: cannot read %s (%s)", item, exc)
        return None


def _frame(ax, colour: Optional[str]) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(colour is not None)
        if colour is not None:
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)


def _draw_result(ax, result: Sequence[Any]) -> None:
    """One result cell: (image, is_match, score) -> framed picture titled with the score."""
    image, is_match, score = result
    picture = _load_picture(image)
    if picture is None:
        ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=7)
    else:
        ax.imshow(np.asarray(picture))
    colour = None if is_match is None else (MATCH_COLOUR if is_match else MISS_COLOUR)
    _frame(ax, colour)
    ax.set_title(f"{float(score):.3f}", fontsize=8)


def retrieval_sheet(queries: Sequence[Mapping[str, Any]], out_path: Union[str, Path], top_k: int = 10) -> Path:
    """Draw one row per query: its caption, then its top-k results.

    Args:
        queries: ``[{"caption": str, "results": [(image, is_match, score), ...]}, ...]`` where
            ``image`` is a path or a PIL image, ``is_match`` is True (green frame), False (red
            frame) or None (identity unknown: no frame), results best first.
        out_path: picture to write.
        top_k: at most this many results per row.
    """
    if not queries:
        raise SsanError("retrieval sheet: no queries to draw")
    if top_k < 1:
        raise SsanError(f"retrieval sheet: top_k must be >= 1, got {top_k}")
    plt = _pyplot()
    cols = max(1, min(top_k, max(len(q.get("results", ())) for q in queries)))
    fig = plt.figure(figsize=(3.2 + 1.1 * cols, 2.6 * len(queries)))
    grid = fig.add_gridspec(len(queries), cols + 1, width_ratios=[2.9] + [1] * cols, wspace=0.08, hspace=0.3)
    for row, query in enumerate(queries):
        text_ax = fig.add_subplot(grid[row, 0])
        text_ax.axis("off")
        caption = textwrap.fill(str(query.get("caption", "")), CAPTION_WIDTH)
        text_ax.text(0.0, 0.5, caption, ha="left", va="center", fontsize=9, wrap=True)
        for col, result in enumerate(list(query.get("results", ()))[:cols]):
            _draw_result(fig.add_subplot(grid[row, col + 1]), result)
    return _save(fig, out_path)


def _numeric_items(row: Mapping[str, Any], prefix: str = "") -> Iterable[tuple]:
    """(key, float) pairs of a row; nested dicts become ``outer/inner`` keys."""
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _numeric_items(value, prefix=f"{name}/")
        elif isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
            if math.isfinite(float(value)):
                yield name, float(value)


def _group_series(rows: Sequence[Mapping[str, Any]]) -> OrderedDict[str, dict]:
    """{group: {key: ([x...], [y...])}} with x the row's epoch (or its position).

    A key's group is the key without its last ``/`` component (``val/sum/R1`` -> ``val/sum``,
    ``loss/total`` -> ``loss``); a key without ``/`` (``lr``) is a group of its own.
    """
    groups: OrderedDict = OrderedDict()
    for position, row in enumerate(rows):
        x = float(row["epoch"]) if isinstance(row.get("epoch"), (int, float)) else float(position)
        for key, value in _numeric_items(row):
            if key == "epoch":
                continue
            group = key.rsplit("/", 1)[0] if "/" in key else key
            xs, ys = groups.setdefault(group, OrderedDict()).setdefault(key, ([], []))
            xs.append(x)
            ys.append(value)
    return groups


def _ceiling_r1(ceiling: Union[float, Mapping[str, Any], None]) -> Optional[float]:
    """The R1 of a ``ceiling`` given as a number or as a figures dict (``{"R1": ..}``)."""
    if ceiling is None:
        return None
    value = ceiling.get("R1") if isinstance(ceiling, Mapping) else ceiling
    if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(float(value)):
        raise SsanError(f"training curves: ceiling must be a finite R1 or a dict with one, got {ceiling!r}")
    return float(value)


def _shows_eval_r1(series: Mapping[str, Any]) -> bool:
    """True for a panel with a validation or test R1 curve (``val/sum/R1``, ``test/global/R1``...)."""
    return any(key.split("/")[0] in ("val", "test") and key.endswith("/R1") for key in series)


def _curves_figure(groups: Mapping[str, Mapping[str, tuple]], ceiling: Optional[float]):
    """The figure of :func:`training_curves`: one panel per group, integer epoch ticks."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    all_x = [x for series in groups.values() for xs, _ in series.values() for x in xs]
    for ax, (group, series) in zip(axes.flat, groups.items()):
        ax.set_xlim(min(all_x) - 0.5, max(all_x) + 0.5)  # one epoch axis for every panel
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for key, (xs, ys) in series.items():
            label = key[len(group) + 1 :] if key.startswith(group + "/") else key
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        if ceiling is not None and _shows_eval_r1(series):
            ax.axhline(ceiling, color="0.35", linestyle="--", linewidth=1.2, label="ceiling")
        ax.set_title(group)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if len(ax.get_lines()) > 1 or label != group:
            ax.legend(fontsize=7, ncol=2 if len(series) > 6 else 1)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def training_curves(
    history_rows: Sequence[Mapping[str, Any]],
    out_path: Union[str, Path],
    ceiling: Union[float, Mapping[str, Any], None] = None,
) -> Path:
    """Plot every numeric key of the trainer's JSON-lines rows, one panel per key prefix.

    Args:
        history_rows: dicts such as ``{"epoch": 3, "loss/total": 1.2, "val/sum/R1": 40.0}``;
            one panel per key prefix (the key without its last ``/`` part: ``loss``,
            ``val/sum``...; a key without ``/`` such as ``lr`` gets its own panel); nested
            dicts count as ``/`` paths; keys missing from some rows are fine. The x-axis is
            the epoch, with integer ticks.
        out_path: picture to write.
        ceiling: the best R1 the captions allow (a number, or a figures dict with ``"R1"``,
            such as ``ssan.data.synth_ceiling.caption_ceiling``'s); drawn as a dashed line
            labelled "ceiling" on every panel with a validation or test R1 curve.
    """
    groups = _group_series(history_rows)
    if not groups:
        raise SsanError("training curves: the history has no numeric values to plot")
    return _save(_curves_figure(groups, _ceiling_r1(ceiling)), out_path)


def attention_picture(
    words: Sequence[str], attention: Any, out_path: Union[str, Path], title: Optional[str] = None
) -> Path:
    """Heat map of the word attention (WAM scores) of each body part.

    Args:
        words: the L words the model saw (unknown words already dropped).
        attention: K x L scores in [0, 1] (array, tensor or nested lists), row k = part k+1.
        out_path: picture to write.
        title: optional title (for example the query).
    """
    scores = np.asarray(attention.detach().cpu() if hasattr(attention, "detach") else attention, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != len(words) or not len(words):
        raise SsanError(f"attention picture: expected a K x {len(words)} array, got shape {scores.shape}")
    plt = _pyplot()
    num_parts, length = scores.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * length + 1.5), 0.45 * num_parts + 1.6))
    image = ax.imshow(scores, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(length))
    ax.set_xticklabels(words, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(num_parts))
    ax.set_yticklabels([f"part {k + 1}" for k in range(num_parts)], fontsize=8)
    if length <= 40:
        for k in range(num_parts):
            for i in range(length):
                colour = "black" if scores[k, i] > 0.6 else "white"
                ax.text(i, k, f"{scores[k, i]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    if title:
        ax.set_title(textwrap.shorten(title, 120), fontsize=9)
    fig.tight_layout()
    return _save(fig, out_path)


def track_sheet(query: str, hits: Sequence[Mapping[str, Any]], out_path: Union[str, Path]) -> Path:
    """Draw one row per track result: its best crop beside the full frame with the box drawn.

    Crop and frame share the row's height (the crop is enlarged to it, so it is readable), side
    by side; rows are stacked under the query with no empty band.

    Args:
        query: the description searched for (the sheet's title).
        hits: ``[{"crop": image, "frame": image or None, "box": (x, y, w, h), "title": str}, ...]``
            best first; ``crop`` / ``frame`` are paths, PIL images or H x W x 3 arrays.
        out_path: picture to write.
    """
    if not hits:
        raise SsanError("track sheet: no results to draw")
    from matplotlib.patches import Rectangle

    rows = [(_picture(hit.get("crop")), _picture(hit.get("frame"))) for hit in hits]
    crop_w = ROW_INCHES * max([c.width / c.height for c, _ in rows if c is not None] or [0.5])
    frame_w = ROW_INCHES * max([f.width / f.height for _, f in rows if f is not None] or [16 / 9])
    width, row_h = crop_w + GAP_INCHES + frame_w, ROW_INCHES + LABEL_INCHES
    height = LABEL_INCHES + row_h * len(rows)
    plt = _pyplot()
    fig = plt.figure(figsize=(width, height))
    fig.text(0, 1, textwrap.shorten(query, 100), fontsize=10, weight="bold", va="top")
    for row, (hit, (crop, frame)) in enumerate(zip(hits, rows)):
        top = height - LABEL_INCHES - row * row_h  # inches from the bottom
        fig.text(0, (top - 0.04) / height, str(hit.get("title", "")), fontsize=8, va="top")
        bottom = (top - row_h) / height
        crop_ax = fig.add_axes((0, bottom, crop_w / width, ROW_INCHES / height), anchor="E")
        frame_ax = fig.add_axes(
            ((crop_w + GAP_INCHES) / width, bottom, frame_w / width, ROW_INCHES / height), anchor="W"
        )
        for ax, picture in ((crop_ax, crop), (frame_ax, frame)):
            if picture is None:
                ax.text(0.5, 0.5, "unavailable", ha="center", va="center", fontsize=8)
            else:
                ax.imshow(np.asarray(picture))
            _frame(ax, None)
        if frame is not None and hit.get("box") is not None:
            x, y, w, h = hit["box"]
            frame_ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=MATCH_COLOUR, linewidth=2))
    return _save(fig, out_path)


ROW_INCHES, LABEL_INCHES, GAP_INCHES = 2.4, 0.3, 0.08  # a track sheet's picture row, row title and gap


def _picture(item) -> Optional[Image.Image]:
    if item is None:
        return None
    return Image.fromarray(item) if isinstance(item, np.ndarray) else _load_picture(item)
