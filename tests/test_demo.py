"""``ssan demo``: a user's first command, end to end on a shrunken configuration."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import run_cli

FIGURES = {"R1", "R5", "R10", "mAP", "mINP", "mAP_trapezoid"}


def demo_args(out, overrides) -> list:
    """``ssan demo`` on 40 identities x 4 images with the tiny model, one epoch."""
    args = ["demo", "--output", out, "--ids", 40, "--images-per-id", 4]
    for item in [*overrides, "optim.epochs=1", "optim.milestones=[]"]:
        args += ["--set", item]
    return args


@pytest.mark.slow
def test_demo_runs_end_to_end_resumes_and_refuses_other_settings(tmp_path, tiny_overrides):
    out = tmp_path / "demo"
    args = demo_args(out, tiny_overrides)
    code, stdout, stderr = run_cli(*args)
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for term in ("global", "parts", "relation", "sum"):
        assert set(metrics[term]) == FIGURES
        assert all(0.0 <= value <= 100.0 for value in metrics[term].values())
    assert metrics["num_gallery"] == 16  # 4 test identities x 4 images
    table = stdout.split("\n")
    assert any(line.split()[:1] == ["sum"] and len(line.split()) == 7 for line in table), stdout
    protocol = metrics["reference_protocol"]
    assert protocol["split"] == "test" and protocol["term"] in ("global", "parts", "relation", "sum")
    assert protocol["R1"] >= max(metrics[t]["R1"] for t in ("global", "parts", "relation", "sum")) - 1e-9
    assert set(metrics["ceiling"]) == {"R1", "R5", "R10", "mAP"}
    assert metrics["ceiling"]["R1"] >= metrics["sum"]["R1"]
    assert "ceiling of the test captions" in stdout and "reference protocol" in stdout
    for name in ("retrieval.png", "training_curves.png", "run/checkpoints/last.pt"):
        assert (out / name).stat().st_size > 0, name

    code, again, stderr = run_cli(*args)  # everything is there: resumes, trains nothing, same figures
    assert code == 0, stderr
    assert json.loads((out / "metrics.json").read_text()) == metrics

    code, _, stderr = run_cli(*[a if a != 4 else 5 for a in args])  # other images per identity
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "images_per_id=4, not 5" in lines[0] and str(out / "synth") in lines[0]
    code, _, stderr = run_cli(*args, "--seed", 3)
    assert code == 2 and "seed=0, not 3" in stderr


@pytest.mark.slow
def test_demo_without_matplotlib_finishes_and_says_what_is_missing(tmp_path, tiny_overrides, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    out = tmp_path / "demo"
    code, stdout, stderr = run_cli(*demo_args(out, tiny_overrides))
    assert code == 0, stderr
    assert (out / "metrics.json").is_file() and not (out / "retrieval.png").exists()
    assert "ssan[viz]" in stderr and "pictures: skipped" in stdout
