"""The GPU check's stages that run `ssan train` as commands: torchrun, and kill-and-resume (see gpu_check.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch


def ssan_command(data: Path, out: Path, spec: dict, overrides: list) -> list:
    args = ["train", "--config", spec["preset"], "--data", str(data), "--output", str(out), "--device", spec["device"]]
    for item in spec["extra"] + overrides:
        args += ["--set", item]
    return args


def stage_torchrun(data: Path, spec: dict, folder: Path) -> dict:
    overrides = ["optim.epochs=1", "train.max_steps_per_epoch=5", "train.eval_every=1000"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "ssan",
        *ssan_command(data, folder / "torchrun", spec, overrides),
    ]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    said = [line for line in proc.stderr.splitlines() if "WORLD_SIZE=1" in line]
    return {
        "returncode": proc.returncode,
        "seconds": round(time.perf_counter() - started, 1),
        "path_taken": said[0] if said else None,
        "stderr_tail": proc.stderr[-1500:] if proc.returncode else "",
    }


# Runs `python -m ssan ARGS` and SIGKILLs itself before step KILL_AT ("epoch,step"), after waiting
# for the checkpoints written so far.
KILLER = r"""
import os, runpy, signal, sys
from ssan.engine import trainer as _trainer
from ssan.engine.hooks import Hook
epoch, step = (int(x) for x in os.environ["KILL_AT"].split(","))

class Kill(Hook):
    def before_step(self, trainer, e, s):
        if (e, s) == (epoch, step):
            trainer.writer.wait()
            os.kill(os.getpid(), signal.SIGKILL)

original = _trainer.Trainer.from_config.__func__
def from_config(cls, *a, hooks=(), **k):
    return original(cls, *a, hooks=[*hooks, Kill()], **k)

_trainer.Trainer.from_config = classmethod(from_config)
sys.argv = ["ssan"] + sys.argv[1:]
runpy.run_module("ssan", run_name="__main__", alter_sys=True)
"""


def stage_resume(data: Path, spec: dict, folder: Path) -> dict:
    from ssan.checkpoint import load_checkpoint

    report = {}
    steps = spec["resume_steps"]
    for deterministic in (True, False):
        overrides = [  # 4 checkpoint writes per run, one evaluation (after the last epoch)
            "optim.epochs=2",
            f"train.max_steps_per_epoch={steps}",
            f"train.checkpoint_every={steps // 2}",
            "train.eval_every=1000",
            f"train.deterministic={str(deterministic).lower()}",
        ]
        name = "deterministic" if deterministic else "default"
        whole, cut = folder / f"whole-{name}", folder / f"cut-{name}"
        logs = {step: folder / f"{name}-{step}.log" for step in ("uninterrupted", "killed", "resumed")}
        whole_run = start(
            [sys.executable, "-m", "ssan", *ssan_command(data, whole, spec, overrides)], logs["uninterrupted"]
        )
        killed = start(
            [sys.executable, "-c", KILLER, *ssan_command(data, cut, spec, overrides)],
            logs["killed"],
            env={**os.environ, "KILL_AT": f"1,{steps // 2 + 1}"},
        )
        killed_returncode = finish(killed, logs["killed"], allowed=(-9,))
        finish(whole_run, logs["uninterrupted"])
        resumed = [sys.executable, "-m", "ssan", *ssan_command(data, cut, spec, overrides), "--resume"]
        finish(start(resumed, logs["resumed"]), logs["resumed"])
        a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
        diffs = [(a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point()]
        report[name] = {
            "killed_returncode": killed_returncode,
            "max_weight_difference": max(diffs),
            "bit_identical": all(torch.equal(a[k], b[k]) for k in a),
        }
    return report


class CommandFailed(RuntimeError):
    """A command of a stage exited with an unexpected code; the message ends with its stderr."""


def start(command: list, log: Path, env: Optional[dict] = None) -> subprocess.Popen:
    """``command`` started in the background, its stderr going to ``log`` (stdout discarded)."""
    with open(log, "w", encoding="utf-8") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def finish(proc: subprocess.Popen, log: Path, allowed: tuple = (0,), timeout: int = 600) -> int:
    """Wait for ``proc``; raise :class:`CommandFailed` with the tail of its stderr unless it exited with ``allowed``."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode not in allowed:
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise CommandFailed(f"{log.stem}: exit code {proc.returncode} (timeout {timeout} s); stderr: {tail}")
    return proc.returncode
