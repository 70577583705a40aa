"""The GPU check: one prepared script, every figure measured, one JSON report.

Stages (each writes its section of the report; a failing stage is recorded and the others go on):

  train      the cuhk-pedes preset (ResNet-50 at 384x128, 11,000 classes, batch 64, pretrained=false)
             for --steps steps on a synthetic set, in fp32, bf16 and fp16: steps/s, images/s, the
             time spent waiting for the loader, peak GPU memory, and host syncs per step (counted
             by torch.cuda.set_sync_debug_mode, which warns at every synchronising call)
  torchrun   `torchrun --nproc_per_node 1 -m ssan train` (NCCL, the DDP path with one process)
  resume     a run killed with SIGKILL mid-epoch and resumed with --resume, against the same run
             uninterrupted, with and without train.deterministic: the largest weight difference
  metrics    rank_metrics on a 19,848 x 19,848 similarity (ICFG-PEDES test size) on the GPU against
             the CPU, and the four-term evaluation of random features of that size on the GPU
  clip       SSAN on a CLIP ViT-B/16 (cuhk-pedes-clip, random trunks) at 384x128, batch 64, fp32 and
             bf16: the train stage's figures (benchmarks/gpu_check_clip.py)

    python benchmarks/gpu_check.py --out gpu_report.json           # on a GPU machine, about 6 minutes
    python benchmarks/gpu_check.py --dry-run --out report.json     # every stage on the CPU, tiny sizes

Nothing is downloaded (no pretrained weights); the synthetic set is generated first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_check_clip import stage_clip  # noqa: E402  (the clip stage lives beside this script)


def sizes(dry_run: bool) -> dict:
    if dry_run:
        return {
            "ids": 60,
            "images": 2,
            "steps": 4,
            "preset": "synth",
            "gallery": 600,
            "device": "cpu",
            "extra": [
                "data.batch_size=16",
                "data.num_workers=0",
                "model.embed_dim=32",
                "model.word_dim=16",
                "model.hidden_dim=32",
                "model.cnn_width=8",
            ],
        }
    return {
        "ids": 13750,
        "images": 2,
        "steps": 150,
        "preset": "cuhk-pedes",
        "gallery": 19848,
        "device": "cuda",
        "extra": ["model.pretrained=false", "data.num_workers=8"],
    }


def make_data(folder: Path, spec: dict) -> Path:
    from ssan.data import generate_synthetic, prepare_dataset

    generate_synthetic(
        folder / "synth",
        ids=spec["ids"],
        images_per_id=spec["images"],
        size=(64, 32),
        seed=0,
        workers=min(16, os.cpu_count() or 1),
    )
    prepare_dataset("cuhk-pedes", folder / "synth", folder / "prepared")
    return folder / "prepared"


def stage_train(data: Path, spec: dict, folder: Path) -> dict:
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    report = {}
    for precision in ("fp32", "bf16", "fp16"):
        amp = [] if precision == "fp32" else ["train.amp=true", f"train.amp_dtype={precision}"]
        config = load_config(spec["preset"], spec["extra"] + amp + ["optim.epochs=1"])
        trainer = Trainer.from_config(config, data, folder / f"train-{precision}", device=spec["device"])
        report[precision] = time_steps(trainer, spec["steps"], torch.device(spec["device"]))
        report[precision]["classes"] = trainer.prepared.num_classes
        del trainer
    return report


def time_steps(trainer, steps: int, device: torch.device) -> dict:
    """Steps/s and friends over ``steps`` steps after 3 warm-up steps."""
    cuda = device.type == "cuda"
    trainer.sampler.set_epoch(0, 0, steps + 3)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    waits, syncs, started = [], [], None
    iterator, index = iter(trainer.loader()), 0
    while True:
        before = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        waits.append(time.perf_counter() - before)
        if index == 3:
            if cuda:
                torch.cuda.synchronize()
            started, waits = time.perf_counter(), [waits[-1]]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            trainer.train_step(batch, 0, index)
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        syncs.append(sum("synchroniz" in str(w.message) for w in caught))
        index += 1
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    timed = index - 3
    return {
        "steps": timed,
        "steps_per_s": round(timed / seconds, 3),
        "images_per_s": round(timed * trainer.config.data.batch_size / seconds, 1),
        "loader_wait_s_per_step": round(sum(waits) / max(1, len(waits)), 4),
        "syncs_per_step": round(sum(syncs[3:]) / max(1, timed), 2),
        "syncs_first_steps": syncs[:3],
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def ssan_command(data: Path, out: Path, spec: dict, overrides: list) -> list:
    args = ["train", "--config", spec["preset"], "--data", str(data), "--output", str(out), "--device", spec["device"]]
    for item in spec["extra"] + overrides:
        args += ["--set", item]
    return args


def stage_torchrun(data: Path, spec: dict, folder: Path) -> dict:
    overrides = ["optim.epochs=1", "train.max_steps_per_epoch=5"]
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
    steps = 4 if spec["device"] == "cpu" else 20
    for deterministic in (True, False):
        overrides = [
            "optim.epochs=2",
            f"train.max_steps_per_epoch={steps}",
            f"train.checkpoint_every={steps // 2}",
            f"train.deterministic={str(deterministic).lower()}",
        ]
        name = "deterministic" if deterministic else "default"
        whole, cut = folder / f"whole-{name}", folder / f"cut-{name}"
        subprocess.run(
            [sys.executable, "-m", "ssan", *ssan_command(data, whole, spec, overrides)],
            check=True,
            capture_output=True,
            timeout=900,
        )
        killed = subprocess.run(
            [sys.executable, "-c", KILLER, *ssan_command(data, cut, spec, overrides)],
            env={**os.environ, "KILL_AT": f"1,{steps // 2 + 1}"},
            capture_output=True,
            timeout=900,
        )
        subprocess.run(
            [sys.executable, "-m", "ssan", *ssan_command(data, cut, spec, overrides), "--resume"],
            check=True,
            capture_output=True,
            timeout=900,
        )
        a = load_checkpoint(whole / "checkpoints" / "last.pt")["model"]
        b = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
        diffs = [(a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point()]
        report[name] = {
            "killed_returncode": killed.returncode,
            "max_weight_difference": max(diffs),
            "bit_identical": all(torch.equal(a[k], b[k]) for k in a),
        }
    return report


def stage_metrics(spec: dict) -> dict:
    from ssan.evaluation import evaluate_features, rank_metrics

    device = torch.device(spec["device"])
    size, ids = spec["gallery"], spec["gallery"] // 5
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, ids, (size,), generator=gen)
    scores = torch.randn(size, size, generator=gen)
    started = time.perf_counter()
    on_cpu = rank_metrics(scores, labels, labels)
    cpu_s = time.perf_counter() - started
    moved = scores.to(device)
    rank_metrics(moved[:64], labels[:64], labels)  # warm-up
    _sync(device)
    started = time.perf_counter()
    on_device = rank_metrics(moved, labels.to(device), labels.to(device))
    _sync(device)
    device_s = time.perf_counter() - started
    del moved, scores
    widths = (
        {"global": (1024,), "parts": (6, 1024), "relation": (6, 512)}
        if device.type == "cuda"
        else {"global": (32,), "parts": (6, 32), "relation": (6, 16)}
    )
    feats = {t: torch.randn(size, *w, generator=gen).to(device) for t, w in widths.items()}
    texts = {t: v + 0.5 * torch.randn(v.shape, generator=gen).to(device) for t, v in feats.items()}
    started = time.perf_counter()
    four = evaluate_features(feats, texts, labels, labels, device=device)
    _sync(device)
    return {
        "size": size,
        "rank_metrics_cpu_s": round(cpu_s, 3),
        "rank_metrics_device_s": round(device_s, 3),
        "identical": on_cpu == on_device,
        "cpu": on_cpu,
        "device": on_device,
        "four_term_evaluation_s": round(time.perf_counter() - started, 3),
        "four_term_sum": four["t2i"]["sum"],
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_stage(report: dict, name: str, work) -> None:
    started = time.perf_counter()
    try:
        report[name] = work()
    except Exception as exc:  # recorded; the other stages still run
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    report[name]["stage_seconds"] = round(time.perf_counter() - started, 1)
    print(f"{name}: {json.dumps(report[name])[:600]}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes")
    parser.add_argument("--out", default="gpu_report.json")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per precision")
    parser.add_argument("--stages", default="train,torchrun,resume,metrics,clip")
    args = parser.parse_args()
    spec = sizes(args.dry_run)
    if args.steps:
        spec["steps"] = args.steps
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    report = {
        "dry_run": args.dry_run,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    stages = args.stages.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = make_data(folder, spec)
        report["data_seconds"] = round(time.perf_counter() - started, 1)
        work = {
            "train": lambda: stage_train(data, spec, folder),
            "torchrun": lambda: stage_torchrun(data, spec, folder),
            "resume": lambda: stage_resume(data, spec, folder),
            "metrics": lambda: stage_metrics(spec),
            "clip": lambda: stage_clip(data, spec, folder, time_steps),
        }
        for name in stages:
            run_stage(report, name, work[name])
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    failed = [name for name in stages if "error" in report[name] or report[name].get("returncode", 0)]
    print(f"report: {args.out} ({report['total_seconds']} s); failed stages: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
