"""Training engine: configs, checkpoints, resume equality, NaN stop, DDP, the train CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssan.checkpoint import load_checkpoint, load_model, save_checkpoint
from ssan.cli import main
from ssan.config import Config, apply_overrides, load_config
from ssan.engine.hooks import Hook
from ssan.engine.sampler import GlobalBatchSampler
from ssan.engine.trainer import Trainer
from ssan.errors import CheckpointError, ConfigError


# ------------------------------------------------------------------ config
def test_presets_load_and_round_trip():
    for name in ("cuhk-pedes", "icfg-pedes", "rstpreid", "synth"):
        config = load_config(name)
        assert Config.from_dict(config.to_dict()) == config
    paper = load_config("cuhk-pedes")
    assert (paper.optim.lr, paper.optim.backbone_lr, paper.optim.epochs) == (1e-3, 1e-4, 60)
    assert paper.optim.milestones == (20, 40) and paper.data.batch_size == 64
    assert (paper.data.height, paper.data.width) == (384, 128)


def test_overrides_are_typed_and_validated():
    config = apply_overrides(
        Config(),
        [
            "optim.epochs=3",
            "optim.milestones=[1, 2]",
            "model.parts=false",
            "optim.lr=5e-4",
            "model.pretrained=/tmp/w.pth",
        ],
    )
    assert config.optim.epochs == 3 and config.optim.milestones == (1, 2)
    assert config.model.parts is False and config.optim.lr == 5e-4
    assert config.model.pretrained == "/tmp/w.pth"
    for bad in ["optim.epochs=abc", "optim.nope=1", "nosection.x=1", "epochs=3", "model.parts=3"]:
        with pytest.raises(ConfigError):
            apply_overrides(Config(), [bad])
    with pytest.raises(ConfigError, match="valid names"):
        load_config("no-such-preset")


# ----------------------------------------------------------------- sampler
def test_sampler_is_a_function_of_epoch_and_resumes_at_a_step():
    sampler = GlobalBatchSampler(50, batch_size=4, seed=3)
    assert sampler.steps_per_epoch() == 12  # the incomplete last batch is dropped
    sampler.set_epoch(2)
    full = list(sampler)
    assert len(full) == 48 and all(key // 50 == 2 for key in full)  # keys carry the epoch
    assert len({key % 50 for key in full}) == 48
    sampler.set_epoch(2, start_step=3)
    assert list(sampler) == full[12:]
    sampler.set_epoch(2, start_step=3, stop_step=5)
    assert list(sampler) == full[12:20] and len(sampler) == 8
    sampler.set_epoch(3)
    assert [k % 50 for k in sampler] != [k % 50 for k in full]


def test_shards_of_a_global_batch_concatenate_to_the_single_process_batch():
    single = GlobalBatchSampler(50, batch_size=8, seed=3)
    shards = [GlobalBatchSampler(50, batch_size=8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for sampler in (single, *shards):
        sampler.set_epoch(1)
    alone, parts = list(single), [list(s) for s in shards]
    assert all(len(p) == len(alone) // 2 for p in parts)
    for step in range(single.steps_per_epoch()):
        assert alone[8 * step : 8 * step + 8] == parts[0][4 * step : 4 * step + 4] + parts[1][4 * step : 4 * step + 4]
    with pytest.raises(ConfigError, match="does not divide among 3 processes"):
        GlobalBatchSampler(50, batch_size=8, rank=0, world_size=3)


# ------------------------------------------------------------- checkpoints
def test_tiny_run_outputs(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss/total"])) for row in rows)
    assert "val/sum/R1" in rows[-1]
    results = json.loads((tiny_run / "results.json").read_text())
    assert set(results["test_last"]["t2i"]) >= {"global", "parts", "relation", "sum"}
    assert "test_selected" in results and results["selection"]["split"] == "val"
    assert (tiny_run / "config.yaml").exists()


def test_results_report_the_reference_protocol(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((tiny_run / "results.json").read_text())
    protocol = results["reference_protocol"]
    candidates = [
        (row[f"test/{term}/R1"], row["epoch"], term) for row in rows for term in ("global", "parts", "relation", "sum")
    ]
    best = max(candidates, key=lambda c: c[0])  # max() keeps the first maximum: earliest epoch, then term
    assert (protocol["R1"], protocol["epoch"], protocol["term"]) == best
    row = next(r for r in rows if r["epoch"] == best[1])
    for metric in ("R5", "R10", "mAP", "mINP", "mAP_trapezoid"):
        assert protocol[metric] == row[f"test/{best[2]}/{metric}"]
    assert protocol["split"] == "test" and "optimistic" in protocol["label"]
    last = results["test_last"]["t2i"]  # the last epoch's per-epoch test figures are test_last's
    assert rows[-1]["test/sum/R1"] == last["sum"]["R1"] and all(r["steps"] > 0 for r in rows)


def test_best_checkpoint_keeps_no_training_state(tiny_run):
    from ssan.checkpoint import TRAINING_KEYS

    best = load_checkpoint(tiny_run / "checkpoints" / "best.pt")
    last = load_checkpoint(tiny_run / "checkpoints" / "last.pt")
    assert not set(TRAINING_KEYS) & set(best) and set(TRAINING_KEYS) <= set(last)
    assert best["model"].keys() == last["model"].keys() and best["history"]
    assert (tiny_run / "checkpoints" / "best.pt").stat().st_size < (tiny_run / "checkpoints" / "last.pt").stat().st_size


def test_checkpoint_holds_everything_and_loads_strictly(tiny_run):
    path = tiny_run / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    for key in ("model", "criterion", "optimizer", "scheduler", "rng", "config", "vocab", "epoch", "arch"):
        assert key in state
    model, vocab, info = load_model(path)
    assert not model.training and len(vocab) == state["arch"]["vocab_size"]
    assert "optimizer" not in info and "criterion" not in info
    # a foreign key makes the strict load fail with a clear message
    state["model"]["extra.weight"] = torch.zeros(1)
    broken = tiny_run / "broken.pt"
    save_checkpoint(broken, {k: v for k, v in state.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(broken)


def test_unsafe_and_corrupt_checkpoints_are_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "ssan-checkpoint", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(tmp_path / "empty.pt")
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"arch": {}, "model": {"w": torch.ones(1000)}, "vocab": ["<pad>"]})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")


# ------------------------------------------------------------------ resume
def _weights(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert ra["test_last"]["t2i"] == rb["test_last"]["t2i"]
    assert ra["selection"] == rb["selection"]


class Interrupted(Exception):
    pass


class StopAfter(Hook):
    """Raises after ``steps`` optimisation steps, as a killed process would stop."""

    def __init__(self, steps: int) -> None:
        self.steps, self.done = steps, 0

    def after_step(self, trainer, epoch, step, losses):
        self.done += 1
        if self.done >= self.steps:
            raise Interrupted


@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_uninterrupted(prepared_synth, tiny_run, tiny_overrides, tmp_path):
    config = load_config("synth", tiny_overrides + ["train.checkpoint_every=2"])
    # stop after 3 steps: the latest checkpoint is mid-epoch (step 2 of epoch 1)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        Trainer.from_config(config, prepared_synth, interrupted, device="cpu", hooks=[StopAfter(3)]).fit()
    assert load_checkpoint(interrupted / "checkpoints" / "last.pt")["step_in_epoch"] == 2
    Trainer.from_config(config, prepared_synth, interrupted, device="cpu", resume=True).fit()
    _assert_same_run(tiny_run, interrupted)
    full = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[0])["steps"]
    assert json.loads((interrupted / "metrics.jsonl").read_text().splitlines()[0])["steps"] == full - 2
    rows = (interrupted / "metrics.jsonl").read_text().splitlines()
    reference = (tiny_run / "metrics.jsonl").read_text().splitlines()
    strip = ("time_s", "pairs_per_s", "steps")
    assert [{k: v for k, v in json.loads(r).items() if k not in strip} for r in rows] == [
        {k: v for k, v in json.loads(r).items() if k not in strip} for r in reference
    ]


def test_resume_without_checkpoint_is_a_clear_error(prepared_synth, tiny_config, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer.from_config(tiny_config, prepared_synth, tmp_path / "none", device="cpu", resume=True).fit()


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(prepared_synth, tiny_overrides, tmp_path):
    config = load_config("synth", tiny_overrides + ["optim.epochs=2"])
    run = tmp_path / "nan"
    trainer = Trainer.from_config(config, prepared_synth, run, device="cpu")
    original = trainer.criterion.forward
    calls = {"n": 0}
    steps_per_epoch = trainer.sampler.steps_per_epoch()

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] > steps_per_epoch + 1:  # second step of the second epoch
            out["total"] = out["total"] * float("nan")
        return out

    trainer.criterion.forward = poisoned
    with pytest.raises(Exception, match=r"non-finite .* epoch 2, step 2"):
        trainer.fit()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_device_choice_under_torchrun(monkeypatch):
    from ssan.devices import resolve_device
    from ssan.errors import SsanError

    assert resolve_device("cpu", local_rank=3) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SsanError, match="CUDA is not available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda", local_rank=2) == torch.device("cuda", 2)
    assert resolve_device("cuda:2", local_rank=2) == torch.device("cuda", 2)
    with pytest.raises(SsanError, match="local rank"):
        resolve_device("cuda:0", local_rank=2)


# -------------------------------------------------------------------- CLI
def test_train_cli_in_process(prepared_synth, tiny_overrides, tmp_path, capsys):
    run = tmp_path / "cli-run"
    args = ["train", "--config", "synth", "--data", str(prepared_synth), "--output", str(run), "--device", "cpu"]
    for item in tiny_overrides + ["optim.epochs=1"]:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "R1" in out and (run / "checkpoints" / "last.pt").exists()
    assert main(["train", "--data", str(prepared_synth), "--output", str(run), "--set", "optim.bogus=1"]) == 2
    assert "optim.bogus" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_two_processes_gloo(prepared_synth, tiny_overrides, tmp_path):
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "ssan",
        "train",
        "--config",
        "synth",
        "--data",
        str(prepared_synth),
        "--output",
        str(run),
        "--device",
        "cpu",
    ]
    for item in tiny_overrides + ["optim.epochs=1", "data.batch_size=8"]:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 1 and not any(k.startswith("module.") for k in state["model"])
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone writes
    assert json.loads((run / "results.json").read_text())["test_last"]["num_queries"] > 0
