"""What a new user breaks by following the README: the command line guards each case."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from helpers import run_cli
from ssan.engine.trainer import Trainer
from ssan.errors import ConfigError


def _one_line_error(code: int, err: str, command: str, *needles: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ssan {command}: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def _digests(run) -> dict:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*") if p.is_file()}


# ------------------------------------------------------------------ a run is never replaced silently
def test_train_refuses_a_folder_holding_a_run(prepared_synth, tiny_config, tiny_overrides, tmp_path):
    run = tmp_path / "run"
    Trainer.from_config(tiny_config, prepared_synth, run, device="cpu").fit()
    before = _digests(run)
    args = ["train", "--data", prepared_synth, "--output", run, "--device", "cpu"]
    for item in tiny_overrides + ["optim.epochs=1"]:
        args += ["--set", item]
    code, _, err = run_cli(*args)
    _one_line_error(code, err, "train", "already holds a training run", "--resume", "--overwrite")
    with pytest.raises(ConfigError, match="already holds a training run"):
        Trainer.from_config(tiny_config, prepared_synth, run, device="cpu")
    assert _digests(run) == before  # best.pt, last.pt, config.yaml, metrics.jsonl untouched
    code, _, err = run_cli(*args, "--resume", "--overwrite")
    _one_line_error(code, err, "train", "pass one")
    code, _, err = run_cli(*args, "--overwrite")
    assert code == 0, err
    after = _digests(run)
    assert after["checkpoints/best.pt"] != before["checkpoints/best.pt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # the 1-epoch run's rows only


@pytest.mark.parametrize(
    "setting",
    [
        "optim.epochs=0",
        "optim.epochs=-1",
        "data.num_workers=-1",
        "data.batch_size=0",
        "data.eval_batch_size=-3",
        "optim.lr=0",
        "optim.lr=-1e-3",
        "optim.backbone_lr=-1",
        "optim.lr=.nan",
        "optim.gamma=0",
        "optim.betas=[0.9, 1.5]",
        "optim.milestones=[0]",
        "model.dropout=1.0",
        "model.embed_dim=0",
        "model.num_parts=0",
        "loss.margin=-0.2",
        "loss.temperature=0",
        "loss.terms.id=-1",
        "train.eval_every=0",
        "train.log_every=0",
        "train.cpu_threads=-2",
        "train.seed=-1",
    ],
)
def test_numeric_settings_are_checked_at_load(setting, prepared_synth, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", prepared_synth, "--output", run, "--set", setting)
    _one_line_error(code, err, "train", setting.split("=")[0])
    assert not run.exists()  # nothing written, not even config.yaml


# ------------------------------------------------------------------ typos
def _usage_error(capsys, *argv) -> str:
    from ssan.cli import main

    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    assert info.value.code == 2
    return capsys.readouterr().err


def test_a_misspelt_command_gets_a_suggestion(capsys):
    err = _usage_error(capsys, "serach", "--index", "x", "a red coat")
    assert "unknown command 'serach' (did you mean search?)" in err


def test_an_unknown_option_is_named_before_missing_required_ones(capsys):
    err = _usage_error(capsys, "search", "--indx", "gallery", "a red coat")
    assert err.startswith("usage: ssan search ") and "required" not in err
    assert "unrecognized arguments: --indx (did you mean --index?)" in err
    err = _usage_error(capsys, "search", "--index", "gallery", "a red coat", "--topk", "3")
    assert err.startswith("usage: ssan search ") and "unrecognized arguments: --topk" in err
    err = _usage_error(capsys, "search", "--index", "gallery", "a red coat", "extra words")
    assert err.startswith("usage: ssan search ") and "unrecognized arguments: extra words" in err
    err = _usage_error(capsys, "train", "--data", "d", "--output", "o", "--set", "optim.lr=-1", "--ovewrite")
    assert "unrecognized arguments: --ovewrite (did you mean --overwrite?)" in err


HELP_IMPORTS = """
import sys
from ssan.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(sorted(m for m in ("torch", "torchvision", "numpy") if m in sys.modules))
"""


def test_help_imports_neither_torch_nor_the_commands_options():
    """``ssan --help`` lists the commands without importing what their options need (was 2.9 s)."""
    out = subprocess.run([sys.executable, "-c", HELP_IMPORTS], capture_output=True, text=True, check=True).stdout
    assert "COMMAND" in out and "search" in out and out.strip().endswith("[]"), out


# ------------------------------------------------------------------ folders given for files
def test_a_folder_given_as_checkpoint_names_the_checkpoints_in_it(prepared_synth, tmp_path):
    from helpers import save_random_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    best = save_random_checkpoint(run / "checkpoints" / "best.pt", prepared_synth)
    for folder in (run, run / "checkpoints"):
        code, _, err = run_cli("test", "--checkpoint", folder, "--data", prepared_synth, "--no-progress")
        _one_line_error(code, err, "test", f"checkpoint {folder} is a folder", str(best))
        assert "last.pt" not in err  # only what is there
    code, _, err = run_cli("test", "--checkpoint", tmp_path, "--data", prepared_synth, "--no-progress")
    _one_line_error(code, err, "test", "is a folder", "holds no best.pt or last.pt")


def test_a_raw_dataset_folder_given_as_data_points_to_its_prepared_folder(synth_root, prepared_synth, tmp_path):
    import shutil

    from helpers import save_random_checkpoint

    checkpoint = save_random_checkpoint(tmp_path / "m.pt", prepared_synth)
    raw = tmp_path / "raw"
    raw.mkdir()
    shutil.copy(synth_root / "reid_raw.json", raw)  # the annotation file of a cuhk-pedes layout
    code, _, err = run_cli("test", "--checkpoint", checkpoint, "--data", raw, "--no-progress")
    _one_line_error(code, err, "test", "raw cuhk-pedes folder", f"ssan prepare --dataset cuhk-pedes --root {raw}")
    (raw / "ssan-prepared").symlink_to(prepared_synth, target_is_directory=True)
    code, _, err = run_cli("test", "--checkpoint", checkpoint, "--data", raw, "--no-progress")
    _one_line_error(code, err, "test", "not a prepared one", f"use its prepared folder {raw / 'ssan-prepared'}")


def test_search_on_a_missing_folder_says_it_does_not_exist(tmp_path):
    code, _, err = run_cli("search", "--index", tmp_path / "nope", "a red coat")
    _one_line_error(code, err, "search", f"index {tmp_path / 'nope'} does not exist")
