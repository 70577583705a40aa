"""Faults catalogue, interrupted training: ``python -m ssan train`` killed with SIGKILL, then resumed.

One run is killed at eight moments, each a different state of the trainer, and resumed with
``--resume`` after each kill until it completes:

1. early in epoch 1, before any checkpoint exists (``--resume`` then says "no checkpoint": start over);
2. mid-epoch 1, after the step-2 checkpoint;
3. during a checkpoint write (the writer stops with half the bytes written);
4. during the evaluation that ends epoch 1 (after the gallery was encoded);
5. right after epoch 1 ended (its checkpoint written, before the first step of epoch 2);
6. late in epoch 2, after its step-4 checkpoint;
7. during the checkpoint write that ends epoch 2 (the last epoch);
8. during the final test evaluation, with every epoch done.

Every time: the latest checkpoint loads; a killed write leaves ``last.pt`` byte-identical (its
temporary may remain and must not disturb the next resume). At the end the weights (``torch.equal``
per tensor), the ``results.json`` test figures and the metric rows equal an uninterrupted run's.

Every kill runs ``python -m ssan`` unchanged through a small wrapper (test code, nothing in the
package): kills 1, 2, 4, 5, 6 and 8 add one trainer hook (through ``Trainer.from_config``) that writes
a marker file and sleeps at the chosen moment (before an (epoch, step), or inside the evaluation of a
split after its gallery was encoded), once the checkpoints written so far are on disk; kills 3 and
7 replace ``torch.save`` so that a checkpoint write stops with half its bytes in the temporary file.
The test SIGKILLs the process as soon as the marker or the half-written temporary appears.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import HALF_SAVE
from ssan.checkpoint import load_checkpoint
from ssan.errors import CheckpointError

pytestmark = pytest.mark.slow

EXTRA = ["train.checkpoint_every=2", "train.max_steps_per_epoch=6", "train.test_every_epoch=false"]  # a final test
WAIT_S = 240  # longest wait for one moment to be reached (a loaded 2-core CI machine)

# Runs `python -m ssan ARGS`. FAULT_AT="step:E,S" holds before optimisation step S of epoch E
# (0-based); "eval:SPLIT,E" holds inside an evaluation of SPLIT while E epochs are recorded (an epoch's
# row is recorded after its evaluations: "val,0" is the end of epoch 1, "test,2" the final test of a
# 2-epoch run), once the gallery is encoded; "write" stops every checkpoint write half-way.
HOOK = (
    "HALF_SAVE = "
    + repr(HALF_SAVE)
    + r"""
import os, runpy, sys, time
where = os.environ["FAULT_AT"]
marker = os.environ.get("FAULT_MARKER", "")
kind, _, spec = where.partition(":")

def hold(trainer):
    trainer.writer.wait()  # the checkpoints written so far are complete on disk
    with open(marker, "w") as handle:
        handle.write(where)
    time.sleep(3600)  # the test kills the process here

if kind == "write":
    exec(HALF_SAVE)
else:
    from ssan.engine import trainer as _trainer
    from ssan.engine.hooks import Hook
    import ssan.evaluation.evaluator as _evaluator
    current = {}

    class Hold(Hook):
        def before_step(self, trainer, epoch, step):
            if kind == "step" and (epoch, step) == tuple(int(x) for x in spec.split(",")):
                hold(trainer)

        def before_evaluation(self, trainer, split):
            current.update(at=(split, len(trainer.history)), trainer=trainer)

    original_encode, original_from_config = _evaluator.encode_loader, _trainer.Trainer.from_config.__func__

    def encode_loader(model, loader, desc, *args, **kwargs):
        split, epochs = spec.split(",") if kind == "eval" else ("", "-1")
        if desc == "queries" and current.get("at") == (split, int(epochs)):
            hold(current["trainer"])
        return original_encode(model, loader, desc, *args, **kwargs)

    def from_config(cls, *args, hooks=(), **kwargs):
        return original_from_config(cls, *args, hooks=[*hooks, Hold()], **kwargs)

    _evaluator.encode_loader = encode_loader
    _trainer.Trainer.from_config = classmethod(from_config)
sys.argv = ["ssan"] + sys.argv[1:]
runpy.run_module("ssan", run_name="__main__", alter_sys=True)
"""
)


class Run:
    """Launches of ``ssan train`` on one run directory."""

    def __init__(self, data: Path, output: Path, overrides: list):
        self.data, self.output = data, output
        self.args = ["train", "--data", str(data), "--output", str(output), "--device", "cpu"]
        for item in overrides:
            self.args += ["--set", item]
        self.last = output / "checkpoints" / "last.pt"
        self.log = output.parent / f"{output.name}.log"

    def _start(self, resume: bool, env: dict, hook: bool) -> subprocess.Popen:
        args = self.args + (["--resume"] if resume else [])
        command = [sys.executable, "-c", HOOK, *args] if hook else [sys.executable, "-m", "ssan", *args]
        with open(self.log, "ab") as handle:
            handle.write(f"\n$ ssan {' '.join(args)} {env}\n".encode())
            handle.flush()
            return subprocess.Popen(command, env={**os.environ, **env}, stdout=handle, stderr=handle)

    def complete(self, resume: bool) -> subprocess.CompletedProcess:
        args = self.args + (["--resume"] if resume else [])
        return subprocess.run([sys.executable, "-m", "ssan", *args], capture_output=True, text=True, timeout=900)

    def kill_at(self, where: str, resume: bool) -> None:
        """Start, wait until the hook holds at ``where``, SIGKILL."""
        marker = self.output.parent / f"{self.output.name}.marker"
        marker.unlink(missing_ok=True)
        proc = self._start(resume, {"FAULT_AT": where, "FAULT_MARKER": str(marker)}, hook=True)
        self._wait_then_kill(proc, lambda: marker.exists(), where)

    def kill_in_write(self, resume: bool) -> Path:
        """Start with the checkpoint-write pause; SIGKILL once half a checkpoint is in its temporary."""
        before = set(self.last.parent.glob(".last.pt.*.tmp")) | set(self.last.parent.glob(".best.pt.*.tmp"))
        found = []

        def writing() -> bool:
            found[:] = [p for p in self.last.parent.glob(".*.pt.*.tmp") if p not in before and p.stat().st_size > 0]
            return bool(found)

        proc = self._start(resume, {"FAULT_AT": "write"}, hook=True)
        self._wait_then_kill(proc, writing, "checkpoint write")
        return found[0]

    def _wait_then_kill(self, proc: subprocess.Popen, reached, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        try:
            while not reached():
                if proc.poll() is not None:
                    pytest.fail(
                        f"training ended (exit {proc.returncode}) before {what}; log:\n{self.log.read_text()[-3000:]}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(f"{what} not reached in {WAIT_S} s; log:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.05)
            time.sleep(0.2)  # let the hold / the half-written temporary settle
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def position(path: Path) -> tuple:
    state = load_checkpoint(path)  # must load after every kill
    return int(state["epoch"]), int(state.get("step_in_epoch", 0))


def assert_same_run(reference: Path, resumed: Path) -> None:
    a = load_checkpoint(reference / "checkpoints" / "last.pt")
    b = load_checkpoint(resumed / "checkpoints" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["criterion"]:
        assert torch.equal(a["criterion"][key], b["criterion"][key]), key
    ra = json.loads((reference / "results.json").read_text())
    rb = json.loads((resumed / "results.json").read_text())
    for key in ("test_last", "test_selected", "selection", "epochs"):
        assert ra.get(key) == rb.get(key), key

    def rows(run: Path) -> list:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k not in ("time_s", "pairs_per_s", "steps")} for r in lines]

    assert rows(reference) == rows(resumed)


@pytest.fixture(scope="module")
def reference(prepared_synth, tiny_overrides, tmp_path_factory):
    """The uninterrupted run, same command and seed."""
    run = Run(prepared_synth, tmp_path_factory.mktemp("uninterrupted") / "run", tiny_overrides + EXTRA)
    proc = run.complete(resume=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run.output


def test_killed_at_eight_moments_resumes_to_the_same_run(
    reference, prepared_synth, tiny_overrides, tmp_path, record_property
):
    run = Run(prepared_synth, tmp_path / "run", tiny_overrides + EXTRA)
    moments = 0

    # 1. early in epoch 1, no checkpoint yet: --resume refuses clearly, so start over
    run.kill_at("step:0,1", resume=False)
    assert not run.last.exists()
    proc = run.complete(resume=True)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    moments += 1

    # 2. mid-epoch 1, after the step-2 checkpoint (started without --resume: the first attempt saved nothing)
    run.kill_at("step:0,3", resume=False)
    assert position(run.last) == (0, 2)
    moments += 1

    # 3. half-way through the next checkpoint write (step 4): last.pt stays the step-2 one
    good = digest(run.last)
    temporary = run.kill_in_write(resume=True)
    assert digest(run.last) == good and position(run.last) == (0, 2)
    with pytest.raises(CheckpointError):
        load_checkpoint(temporary)
    moments += 1

    # 4. during the evaluation ending epoch 1 (the leftover temporary is still there)
    assert temporary.exists()
    run.kill_at("eval:val,0", resume=True)
    assert position(run.last) == (0, 4)
    moments += 1

    # 5. right after epoch 1 ended: its checkpoint is complete, epoch 2 not started
    run.kill_at("step:1,0", resume=True)
    assert position(run.last) == (1, 0)
    assert len((run.output / "metrics.jsonl").read_text().splitlines()) == 1
    moments += 1

    # 6. late in epoch 2, after its step-4 checkpoint
    run.kill_at("step:1,5", resume=True)
    assert position(run.last) == (1, 4)
    moments += 1

    # 7. half-way through the checkpoint write that ends the last epoch
    good = digest(run.last)
    run.kill_in_write(resume=True)
    assert digest(run.last) == good and position(run.last) == (1, 4)
    moments += 1

    # 8. during the final test evaluation: every epoch is done, results.json is not written yet
    run.kill_at("eval:test,2", resume=True)
    assert position(run.last) == (2, 0) and not (run.output / "results.json").exists()
    moments += 1

    proc = run.complete(resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference, run.output)
    record_property("cases", moments)


def test_no_data_lost_after_kills(reference, prepared_synth, tiny_overrides, tmp_path, record_property):
    """Killed in a write and in an evaluation: last.pt, best.pt and metrics.jsonl stay complete and agree."""
    run = Run(prepared_synth, tmp_path / "run", tiny_overrides + EXTRA)
    run.kill_at("step:1,1", resume=False)  # epoch 1 done: last.pt, best.pt and metrics.jsonl exist
    files = {
        name: digest(run.output / name)
        for name in ("checkpoints/last.pt", "checkpoints/best.pt", "metrics.jsonl", "config.yaml")
    }
    run.kill_in_write(resume=True)  # the step-2 write of epoch 2
    for name, value in files.items():
        assert digest(run.output / name) == value, f"{name} changed although the write was killed"
    for name in ("last.pt", "best.pt"):
        state = load_checkpoint(run.output / "checkpoints" / name)
        assert state["epoch"] == 1 and state["history"] == [
            json.loads(line) for line in (run.output / "metrics.jsonl").read_text().splitlines()
        ]
    proc = run.complete(resume=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference, run.output)
    record_property("cases", 2)
