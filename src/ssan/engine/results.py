"""What a run reports: per-epoch rows, the selected epoch, and the reference's protocol figure.

``metrics.jsonl`` has one row per epoch: ``epoch``, ``lr``, ``time_s``, ``steps``,
``pairs_per_s``, ``loss/<term>_<feature>`` and, for each evaluated split,
``<split>/<term>/<metric>`` (terms global, parts, relation, sum). ``results.json`` has the test
figures of the last epoch (``test_last``) and of the epoch selected on ``train.select_split``
(``test_selected``; the honest headline where a val split exists), and ``reference_protocol``:
the maximum test Rank-1 over every evaluated epoch **and** the four similarity terms, which is how
the SSAN reference code reports its figures (``test_during_train.py``). That figure is selected on
the test split twice over and is optimistic; it exists so a run can be put beside published numbers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional

from ssan._files import atomic_write_text
from ssan.errors import ConfigError

TERMS = ("global", "parts", "relation", "sum")
REFERENCE_LABEL = (
    "maximum test R1 over every evaluated epoch and over the four similarity terms (global, parts, "
    "relation, sum), as the SSAN reference reports; selected on the test split twice over: optimistic"
)


RUN_FILES = ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl", "results.json")  # what a run keeps


def check_run_folder(output_dir: Path, resume: bool, overwrite: bool) -> list:
    """The run files that training into ``output_dir`` will replace (``overwrite``); refuses otherwise.

    A folder holding a run is trained into only to continue it (``resume``) or to replace it on
    purpose (``overwrite``): a finished model is never lost to a repeated command.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the output folder, --overwrite replaces it: pass one")
    found = [name for name in RUN_FILES if (Path(output_dir) / name).exists()]
    if found and not (resume or overwrite):
        raise ConfigError(
            f"output {output_dir} already holds a training run ({', '.join(found)}): pass --resume to "
            "continue it or --overwrite to replace it (Python: resume=True / overwrite=True), or choose "
            "another --output"
        )
    return [] if resume else found


def flatten_metrics(split: str, results: dict) -> dict:
    """``{"<split>/<term>/<metric>": value}`` of an evaluation's text -> image figures (NaN left out)."""
    return {
        f"{split}/{term}/{name}": value
        for term, metrics in results["t2i"].items()
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value))
    }


def selection_value(results: dict, term: str, metric: str) -> float:
    """The selection figure of an evaluation (``sum`` falls back to the only term of a global-only model)."""
    table = results["t2i"]
    return table[term if term in table else "sum"][metric]


def reference_protocol(history: Iterable[dict]) -> Optional[dict]:
    """The reference's figure from the epoch rows: max test R1 over epochs and terms, with where it came from.

    Ties go to the earlier epoch, then to the earlier term in global, parts, relation, sum.
    Returns None when no row has test figures.
    """
    best = None
    for row in history:
        for term in TERMS:
            value = row.get(f"test/{term}/R1")
            if value is not None and (best is None or value > best[0]):
                best = (value, row, term)
    if best is None:
        return None
    _, row, term = best
    prefix = f"test/{term}/"
    figures = {key[len(prefix) :]: value for key, value in row.items() if key.startswith(prefix)}
    return {**figures, "epoch": row["epoch"], "term": term, "split": "test", "label": REFERENCE_LABEL}


def write_history(path: Path, history: list) -> None:
    """``metrics.jsonl``, rewritten whole and atomically (a resumed run rewrites the same rows)."""
    atomic_write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in history))


def write_results(path: Path, results: dict) -> None:
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True))
