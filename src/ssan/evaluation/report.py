"""Plain-text tables of evaluation results."""

from __future__ import annotations

DIRECTIONS = (("t2i", "text -> image"), ("i2t", "image -> text"))


def _metric_names(rows: dict) -> list:
    first = next(iter(rows.values()))
    ranks = sorted((name for name in first if name.startswith("R") and name[1:].isdigit()), key=lambda n: int(n[1:]))
    return ranks + [name for name in ("mAP", "mINP", "mAP_trapezoid") if name in first]


def format_metrics_table(results: dict) -> str:
    """A fixed-width table: one row per term (global, parts, relation, sum), one column per metric.

    ``mAP`` is the standard AP; ``mAP_trapezoid`` (when present) the SSAN reference code's
    interpolated variant, shown for comparison with figures that code produced.

    Args:
        results: the dict of :func:`ssan.evaluation.evaluate` / ``evaluate_features``.
    """
    lines = []
    queries, gallery = results.get("num_queries"), results.get("num_gallery")
    for key, title in DIRECTIONS:
        rows = results.get(key)
        if not rows:
            continue
        if queries is not None and gallery is not None:
            counts = (queries, gallery) if key == "t2i" else (gallery, queries)
            title += f" ({counts[0]} queries x {counts[1]} gallery)"
        if results.get("split"):
            title = f"{results['split']}: {title}"
        names = _metric_names(rows)
        lines.append(title)
        widths = [max(8, len(name) + 2) for name in names]
        lines.append(f"{'term':<10}" + "".join(f"{name:>{w}}" for name, w in zip(names, widths)))
        for term, metrics in rows.items():
            lines.append(f"{term:<10}" + "".join(f"{metrics[name]:>{w}.2f}" for name, w in zip(names, widths)))
    return "\n".join(lines)
