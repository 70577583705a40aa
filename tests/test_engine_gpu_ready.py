"""GPU-ready training, proven on the CPU: mixed precision, host reads per step, DDP = one process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ssan.losses.ranking as ranking
from ssan.checkpoint import load_checkpoint
from ssan.config import load_config
from ssan.engine.profiling import count_syncs
from ssan.engine.sync_bn import GlobalBatchNorm, convert_sync_batchnorm
from ssan.engine.trainer import Trainer
from ssan.losses import LossContext, SSANCriterion, StepInputs
from ssan.models import SSAN

SMALL = dict(num_parts=4, embed_dim=16, word_dim=8, hidden_dim=12, backbone="small", cnn_width=8, dropout=0.0)
HERE = Path(__file__).parent


def first_candidate(candidates, generator):
    return candidates.to(torch.uint8).argmax(dim=1)


def tiny_batch(batch: int = 8, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (batch,), generator=gen)
    tokens = torch.randint(1, 40, (batch, 8), generator=gen) * (torch.arange(8)[None] < lengths[:, None])
    return {
        "image": torch.randn(batch, 3, 32, 16, generator=gen),
        "tokens": tokens,
        "lengths": lengths,
        "weak_tokens": tokens.roll(1, 0),
        "weak_lengths": lengths.roll(1, 0),
        "label": torch.arange(batch) % 4,
    }


def step(dtype, monkeypatch):
    """Forward + criterion + backward of a fixed model and batch; (terms, gradients)."""
    monkeypatch.setattr(ranking, "_uniform_pick", first_candidate)
    torch.manual_seed(0)
    model = SSAN(40, **SMALL).train()
    criterion = SSANCriterion(LossContext(num_classes=4, num_parts=4, embed_dim=16))
    batch = tiny_batch()
    autocast = torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with autocast:
        terms = criterion(model(batch), batch, StepInputs(epoch=3))
    terms["total"].backward()
    params = list(model.parameters()) + list(criterion.parameters())
    return terms, torch.cat([p.grad.flatten() for p in params])


# Stated tolerances against fp32 (measured: fp16 total within 0.01 %, gradient cosine 0.999; bf16, with its
# 8-bit mantissa, total within 1.3 %, cosine 0.967: a few semi-hard negatives change sides).
@pytest.mark.parametrize("dtype, tolerance, min_cosine", [(torch.float16, 0.01, 0.99), (torch.bfloat16, 0.05, 0.9)])
def test_full_step_under_cpu_autocast_is_finite_and_close_to_fp32(dtype, tolerance, min_cosine, monkeypatch):
    reference, ref_grads = step(None, monkeypatch)
    terms, grads = step(dtype, monkeypatch)
    for name, value in terms.items():  # losses, cosines, margins and cross entropies stay float32
        assert value.dtype == torch.float32, name
        assert torch.isfinite(value), name
    assert torch.isfinite(grads).all()
    relative = abs(terms["total"].item() - reference["total"].item()) / reference["total"].item()
    assert relative < tolerance, (relative, terms["total"].item(), reference["total"].item())
    cosine = torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0).item()
    assert cosine > min_cosine, cosine


def test_the_sync_counter_sees_what_a_gpu_would_wait_for():
    values, lengths = torch.randn(6), torch.tensor([3, 5])
    waits = {
        "read": lambda: values[torch.tensor(1)],  # C++ reads a 0-dim index: no .item() in Python
        "copy": lambda: values.to("meta"),  # between devices, blocking
        "host data": lambda: torch.as_tensor(0.2, device=values.device),
        "shape": lambda: values[values > 0],
    }
    for kind, work in waits.items():
        with count_syncs() as syncs:
            work()
        assert [sync.split(" at ")[0] for sync in syncs] == [kind], (kind, syncs)
        assert syncs[0].endswith(f"test_engine_gpu_ready.py:{work.__code__.co_firstlineno}"), syncs
    with count_syncs(host=[lengths]) as syncs:
        values[torch.tensor([1])], values.to("meta", non_blocking=True), int((lengths + 1).max()), lengths.tolist()
        parameter = torch.nn.Parameter(torch.ones(2))
        parameter.sum().backward()
        torch.optim.Adam([parameter], capturable=False).step()  # Adam's host step counter: not counted
    assert syncs == []


@pytest.mark.parametrize("overrides, allowed", [([], 1), (["train.amp=true", "train.amp_dtype=fp16"], 2)])
def test_a_training_step_makes_the_host_wait_at_most_once(prepared_synth, tiny_overrides, tmp_path, overrides, allowed):
    config = load_config("synth", tiny_overrides + ["optim.epochs=1", "train.max_steps_per_epoch=3", *overrides])
    trainer = Trainer.from_config(config, prepared_synth, tmp_path / "run", device="cpu")
    trainer.sampler.set_epoch(0, 0, 3)
    for index, batch in enumerate(trainer.loader()):
        with count_syncs(host=[batch["lengths"], batch["weak_lengths"]]) as syncs:
            trainer.train_step(batch, 0, index)
        assert len(syncs) <= allowed, syncs  # the finiteness check (+ the GradScaler's with fp16)


@pytest.mark.slow
@pytest.mark.parametrize(
    "first, second", [("train.amp=false", "train.amp_dtype=bf16"), ("train.amp_dtype=fp16", "train.amp_dtype=bf16")]
)
def test_resume_across_a_mixed_precision_change(prepared_synth, tiny_overrides, tmp_path, first, second):
    base = tiny_overrides + ["optim.epochs=2", "train.max_steps_per_epoch=2"]
    run = tmp_path / "run"
    amp_first = [] if first == "train.amp=false" else ["train.amp=true", first]
    Trainer.from_config(
        load_config("synth", base + amp_first + ["optim.epochs=1"]), prepared_synth, run, device="cpu"
    ).fit()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["precision"] == ("fp32" if not amp_first else "fp16")
    results = Trainer.from_config(
        load_config("synth", base + ["train.amp=true", second]), prepared_synth, run, device="cpu", resume=True
    ).fit()
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["epoch"] == 2 and state["precision"] == "bf16" and results["test_last"]["num_queries"] > 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def launch(prepared, out: Path, overrides: list, processes: int, epoch: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    script = [str(HERE / "ddp_step.py"), str(prepared), str(out), str(epoch), *overrides]
    command = (
        [sys.executable, *script]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            *script,
        ]
    )
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(out / "step.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("epoch", [0, 3])  # fixed and adaptive weak margins
def test_ddp_gradients_equal_one_process_with_the_global_batch(prepared_synth, tiny_overrides, tmp_path, epoch):
    overrides = tiny_overrides + ["data.batch_size=16", "model.dropout=0.0", "train.sync_bn=true", "data.flip=true"]
    single = launch(prepared_synth, tmp_path / "one", overrides, 1, epoch)
    ddp = launch(prepared_synth, tmp_path / "two", overrides, 2, epoch)
    assert (single["world"], ddp["world"]) == (1, 2)
    assert len(single["syncs"]) <= 1 and len(ddp["syncs"]) <= 1, (single["syncs"], ddp["syncs"])  # the finiteness check
    assert single["grads"].keys() == ddp["grads"].keys()
    for name, grad in single["grads"].items():  # float tolerance relative to each tensor's scale
        error = (ddp["grads"][name] - grad).abs().max().item()
        assert error <= 1e-5 * grad.abs().max().item() + 1e-8, (name, error, grad.abs().max().item())
    assert single["terms"].keys() == ddp["terms"].keys()
    for name, value in single["terms"].items():  # the logged terms are the global batch's
        assert ddp["terms"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    json.dumps(single["terms"])  # plain numbers


@pytest.mark.slow
def test_every_process_resumes_a_channels_last_run_exactly(prepared_synth, tiny_overrides, tmp_path):
    overrides = tiny_overrides + ["optim.epochs=1", "train.max_steps_per_epoch=1", "train.channels_last=true"]
    run = tmp_path / "run"
    Trainer.from_config(load_config("synth", overrides), prepared_synth, run, device="cpu").fit()
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = [str(HERE / "ddp_resume.py"), str(prepared_synth), str(run), str(tmp_path), *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command + script, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["channels_last"] > 0  # the file keeps the layout: what used to arrive scrambled
        assert report["model"] == [] and report["optimizer"] == [], (rank, report)


def test_tf32_covers_matmuls_convolutions_and_the_lstm_and_is_restored():
    from ssan.config import TrainConfig
    from ssan.engine.runtime import training_runtime

    switches = [torch.backends.cuda.matmul, torch.backends.cudnn.conv, torch.backends.cudnn.rnn]
    before = [switch.fp32_precision for switch in switches]
    for tf32, expected in ((False, "ieee"), (True, "tf32")):
        with training_runtime(TrainConfig(tf32=tf32), torch.device("cpu")):
            assert [switch.fp32_precision for switch in switches] == [expected] * 3, tf32
        assert [switch.fp32_precision for switch in switches] == before


def test_auto_precision_takes_fp16_where_bf16_is_only_emulated(monkeypatch):
    from ssan.engine.step import Precision

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert Precision.resolve(True, "auto", torch.device("cuda")).name == "fp16"  # V100, T4
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert Precision.resolve(True, "auto", torch.device("cuda")).name == "bf16"  # Ampere and newer


def test_deterministic_training_says_when_cublas_was_configured_too_late(monkeypatch, caplog):
    from ssan.config import TrainConfig
    from ssan.engine.runtime import training_runtime

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset below")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)  # a CUDA model ran before fit()
    with training_runtime(TrainConfig(deterministic=True), torch.device("cuda")):
        pass
    lines = [r.getMessage() for r in caplog.records if "CUBLAS_WORKSPACE_CONFIG" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "CUBLAS_WORKSPACE_CONFIG=:4096:8" in lines[0]
    caplog.clear()
    with training_runtime(TrainConfig(deterministic=True), torch.device("cuda")):  # now set: nothing to say
        pass
    assert not caplog.records


@pytest.mark.parametrize("native, kind", [(True, torch.nn.SyncBatchNorm), (False, GlobalBatchNorm)])
def test_sync_batchnorm_keeps_the_parameters_the_optimizer_holds(native, kind):
    model = SSAN(40, **SMALL)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    held = {id(p) for p in model.parameters()}
    converted = convert_sync_batchnorm(model, native=native)
    synced = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert len(synced) == len(norms) > 0 and all(type(m) is kind for m in synced)
    assert {id(p) for p in converted.parameters()} == held


def test_the_gpu_check_writes_its_report_after_each_stage(tmp_path, monkeypatch, capsys):
    import importlib.util

    monkeypatch.syspath_prepend(str(HERE.parent / "benchmarks"))  # as `python benchmarks/gpu_check.py` has it
    spec = importlib.util.spec_from_file_location("gpu_check", HERE.parent / "benchmarks" / "gpu_check.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    out, seen = tmp_path / "report.json", {}

    def cut_short(data, spec, folder):  # what a run stopped here (the device's time limit) would have left
        seen.update(json.loads(out.read_text()))
        raise check.CommandFailed("stderr: the reason")

    monkeypatch.setattr(check, "make_data", lambda folder, spec: folder)
    monkeypatch.setattr(check, "stage_torchrun", cut_short)
    assert check.main(["--dry-run", "--out", str(out), "--stages", "metrics,torchrun"]) == 1
    assert seen["metrics"]["identical"] is True and "torchrun" not in seen
    final = json.loads(out.read_text())
    assert final["metrics"] == seen["metrics"] and "stderr: the reason" in final["torchrun"]["error"]
    printed = capsys.readouterr().out
    assert f"metrics: {final['metrics']['stage_seconds']} s" in printed and "torchrun: " in printed


@pytest.mark.slow
def test_compressed_ddp_gradients_stay_within_the_rounding_of_their_wire_format(
    prepared_synth, tiny_overrides, tmp_path
):
    # The hooks send each process's gradient / 2 rounded to the format, sum in it and cast back: a few
    # roundings of 2^-9 (bf16) or 2^-11 (fp16), relative to the processes' shares, which can exceed their sum
    # when their signs differ. Stated tolerance: 2e-2 (bf16) and 4e-3 (fp16) of a tensor's largest gradient
    # (measured: 8.1e-3 and 1.05e-3; uncompressed 3.6e-6), plus fp16's smallest subnormal for flushed values.
    overrides = tiny_overrides + ["data.batch_size=16", "model.dropout=0.0", "train.sync_bn=true", "data.flip=true"]
    single = launch(prepared_synth, tmp_path / "one", overrides, 1, 3)
    formats = {"bf16": (torch.bfloat16, 2e-2, 1e-8), "fp16": (torch.float16, 4e-3, 1e-7)}
    for name, (dtype, relative, absolute) in formats.items():
        ddp = launch(prepared_synth, tmp_path / name, overrides + [f"train.grad_compression={name}"], 2, 3)
        for key, grad in single["grads"].items():
            got = ddp["grads"][key]
            assert torch.equal(got.to(dtype).float(), got), (name, key)  # the sum arrived in the wire format
            error = (got - grad).abs().max().item()
            assert error <= relative * grad.abs().max().item() + absolute, (name, key, error)
