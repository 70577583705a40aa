"""The GPU check: one prepared script, every figure measured, one JSON report written after each stage.

Stages (each writes its section of the report and prints its wall time; a failing stage is
recorded, with the stderr of a failed command, and the others go on):

  train      the cuhk-pedes preset (ResNet-50 at 384x128, batch 64, pretrained=false) on a synthetic
             set of 2,000 identities, in fp32, bf16 and fp16, inside the same process-wide settings
             as `ssan train` (cuDNN benchmark, TF32 switch): steps/s, images/s, the time spent
             waiting for the loader, peak GPU memory; then, in separate untimed steps, the host
             syncs per step (torch.cuda.set_sync_debug_mode's warnings, and ssan's dispatcher
             count) and the LSTM's dtype
  torchrun   `torchrun --nproc_per_node 1 -m ssan train` (NCCL, the DDP path with one process)
  resume     a run killed with SIGKILL mid-epoch and resumed with --resume, against the same run
             uninterrupted (the two run side by side), with and without train.deterministic:
             the largest weight difference; evaluation only after the last epoch
  metrics    rank_metrics on a 19,848 x 19,848 similarity (ICFG-PEDES test size) on the GPU against
             the CPU, and the four-term evaluation of random features of that size on the GPU
  clip       SSAN on a CLIP ViT-B/16 (cuhk-pedes-clip, random trunks) at 384x128, batch 64, fp32 and
             bf16: the train stage's figures (benchmarks/gpu_check_clip.py)

    python benchmarks/gpu_check.py --out gpu_report.json           # on one H100: sized for 6 minutes
    python benchmarks/gpu_check.py --dry-run --out report.json     # every stage on the CPU, tiny sizes

Nothing is downloaded (no pretrained weights); the synthetic set is generated first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Optional

import torch

from gpu_check_clip import stage_clip
from gpu_check_runs import CommandFailed, stage_resume, stage_torchrun  # noqa: F401 (CommandFailed: for callers)

HERE = Path(__file__).resolve().parent


def sizes(dry_run: bool) -> dict:
    if dry_run:
        return {
            "ids": 60,
            "images": 2,
            "steps": 4,
            "sync_steps": 1,
            "resume_steps": 4,
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
    return {  # 2,000 identities: 1,600 training classes (11,000 would make last.pt about 2.5 GB)
        "ids": 2000,
        "images": 3,
        "steps": 100,
        "sync_steps": 3,
        "resume_steps": 8,
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
    from ssan.engine.runtime import training_runtime
    from ssan.engine.trainer import Trainer

    report = {}
    device = torch.device(spec["device"])
    for precision in ("fp32", "bf16", "fp16"):
        amp = [] if precision == "fp32" else ["train.amp=true", f"train.amp_dtype={precision}"]
        config = load_config(spec["preset"], spec["extra"] + amp + ["optim.epochs=1"])
        trainer = Trainer.from_config(config, data, folder / f"train-{precision}", device=spec["device"])
        needed = 3 + spec["steps"] + spec["sync_steps"]
        if trainer.sampler.steps_per_epoch() < needed:
            raise ValueError(f"the synthetic set has {trainer.sampler.steps_per_epoch()} batches, {needed} needed")
        trainer.sampler.set_epoch(0, 0, needed)
        batches = iter(trainer.loader())
        with training_runtime(config.train, device):  # the settings `ssan train` runs with
            report[precision] = time_steps(trainer, batches, spec["steps"], device)
            report[precision].update(count_step_syncs(trainer, batches, spec["sync_steps"], device))
        report[precision]["classes"] = trainer.prepared.num_classes
        del trainer, batches
    return report


def time_steps(trainer, batches, steps: int, device: torch.device) -> dict:
    """Steps/s and friends over ``steps`` steps after 3 warm-up steps, nothing else switched on."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    waits = []
    for index in range(3 + steps):
        if index == 3:
            _sync(device)
            started, waits = time.perf_counter(), []
        before = time.perf_counter()
        batch = next(batches)
        waits.append(time.perf_counter() - before)
        trainer.train_step(batch, 0, index)
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "steps": steps,
        "steps_per_s": round(steps / seconds, 3),
        "images_per_s": round(steps * trainer.config.data.batch_size / seconds, 1),
        "loader_wait_s_per_step": round(sum(waits) / max(1, len(waits)), 4),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }


def count_step_syncs(trainer, batches, steps: int, device: torch.device) -> dict:
    """Host syncs of ``steps`` more (untimed) steps: CUDA's sync-debug warnings and the dispatcher count."""
    from ssan.engine.profiling import count_syncs

    cuda, warned, counted, lstm = device.type == "cuda", [], [], []
    module = getattr(trainer.model.text_encoder, "lstm", None)  # None: a CLIP text trunk (the clip stage)
    hook = module.register_forward_hook(lambda m, i, out: lstm.append(str(out[0].dtype))) if module else None
    for index in range(steps):
        batch = next(batches)
        with warnings.catch_warnings(record=True) as caught, count_syncs(host=_lengths(batch)) as syncs:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                trainer.train_step(batch, 0, 1000 + index)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        warned.append(sum("synchroniz" in str(w.message) for w in caught))
        counted.append(syncs)
    if hook is not None:
        hook.remove()
    return {
        "cuda_syncs_per_step": warned if cuda else None,
        "dispatcher_syncs_per_step": [len(s) for s in counted],
        "dispatcher_syncs_last_step": counted[-1],
        "lstm_dtype": sorted(set(lstm)),
    }


def _lengths(batch: dict) -> list:
    return [value for key, value in batch.items() if "length" in key]


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


def run_stage(report: dict, name: str, work, out: Path) -> None:
    """Run one stage, record it (or its failure) in ``report`` and write the whole report to ``out`` now."""
    started = time.perf_counter()
    try:
        report[name] = work()
    except Exception as exc:  # recorded; the other stages still run
        report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    report[name]["stage_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, out)
    print(f"{name}: {report[name]['stage_seconds']} s: {json.dumps(report[name])[:600]}", flush=True)


def write_report(report: dict, out: Path) -> None:
    """Atomically: a run cut short (the device's time limit) keeps every stage finished so far."""
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(report, indent=2), encoding="utf-8")
    partial.replace(out)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes")
    parser.add_argument("--out", default="gpu_report.json")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per precision")
    parser.add_argument("--stages", default="train,torchrun,resume,metrics,clip")
    args = parser.parse_args(argv)
    spec = sizes(args.dry_run)
    if args.steps:
        spec["steps"] = args.steps
    if spec["device"] == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run on a machine without a GPU", file=sys.stderr)
        return 2
    out = Path(args.out)
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
        write_report(report, out)
        print(f"data: {report['data_seconds']} s", flush=True)
        work = {
            "train": lambda: stage_train(data, spec, folder),
            "torchrun": lambda: stage_torchrun(data, spec, folder),
            "resume": lambda: stage_resume(data, spec, folder),
            "metrics": lambda: stage_metrics(spec),
            "clip": lambda: stage_clip(data, spec, folder, time_steps, count_step_syncs),
        }
        for name in stages:
            run_stage(report, name, work[name], out)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    write_report(report, out)
    failed = [name for name in stages if "error" in report[name] or report[name].get("returncode", 0)]
    print(f"report: {args.out} ({report['total_seconds']} s); failed stages: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
