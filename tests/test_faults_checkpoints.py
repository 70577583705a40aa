"""Faults catalogue, checkpoints as hostile input.

Truncated, bit-flipped, zero-byte, random, non-torch zip, compressed-zip and malformed files give a
CheckpointError naming the file, and ``ssan test`` / ``ssan export`` / ``ssan index`` exit 2 with
one line and no traceback. Pickles whose ``__reduce__`` would run code (a raw pickle, and one inside
a ``torch.save`` zip) are refused and the marker file never appears. A checkpoint from another
vocabulary or architecture is refused with a message saying what differs. A checkpoint write
killed half-way never damages the previous good file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers import HALF_SAVE, run_cli
from ssan.checkpoint import load_checkpoint, load_model, save_checkpoint
from ssan.errors import CheckpointError


def one_line_error(code: int, err: str, command: str, must_contain: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"ssan {command}: error: "), err
    assert must_contain in lines[0] and "Traceback" not in err


def same_content(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_content(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same_content(x, y) for x, y in zip(a, b))
    return a == b or (a != a and b != b)


@pytest.fixture(scope="module")
def good(tiny_checkpoint):
    return Path(tiny_checkpoint)


@pytest.fixture(scope="module")
def state(good):
    return load_checkpoint(good)


def resave(path: Path, state: dict, **changes) -> Path:
    save_checkpoint(path, {k: v for k, v in {**state, **changes}.items() if k not in ("format", "version")})
    return path


# ------------------------------------------------------------ damaged files
def damaged_files(good: Path, folder: Path) -> dict:
    """``{name: path}`` of damaged copies of ``good`` and other non-checkpoints."""
    data = good.read_bytes()
    files = {
        "zero.pt": b"",
        "random.pt": random.Random(1).randbytes(5000),
        "text.pt": b"not a checkpoint\n",
        "json.pt": json.dumps({"format": "ssan-checkpoint"}).encode(),
    }
    for fraction in (0.01, 0.25, 0.5, 0.9, 0.999):
        files[f"truncated-{fraction}.pt"] = data[: int(len(data) * fraction)]
    files["truncated-minus-1.pt"] = data[:-1]
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as archive:
        archive.writestr("hello.txt", "a zip, but not a torch file")
    files["plain.zip.pt"] = plain.getvalue()
    packed = io.BytesIO()
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    files["deflated.pt"] = packed.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in files.items():
        (folder / name).write_bytes(content)
        paths[name] = folder / name
    (folder / "directory.pt").mkdir()
    paths["directory.pt"] = folder / "directory.pt"
    return paths


def test_damaged_files_are_refused_naming_the_file(good, tmp_path, record_property):
    paths = damaged_files(good, tmp_path / "damaged")
    for path in paths.values():
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    record_property("cases", len(paths))


def test_bit_flips_are_detected_or_harmless(good, state, tmp_path, record_property):
    """Flipped bits anywhere: refused (checksums), or the loaded content is exactly the original."""
    data = good.read_bytes()
    rng = random.Random(7)
    flips, refused = 60, 0
    path = tmp_path / "flipped.pt"
    for _ in range(flips):
        damaged = bytearray(data)
        position = rng.randrange(len(damaged))
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(damaged))
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc)
            refused += 1
        else:
            assert same_content(loaded, state), f"a flip at byte {position} changed the content silently"
    assert refused >= flips * 3 // 4
    record_property("cases", flips)


def test_malformed_checkpoints_are_refused(state, tmp_path, record_property):
    weights = state["model"]
    cases = {
        "no-marker": {k: v for k, v in state.items() if k != "format"},
        "version-99": {**state, "version": 99},
        "no-model": {k: v for k, v in state.items() if k != "model"},
        "model-string": {**state, "model": "weights"},
        "model-of-ints": {**state, "model": {k: 1 for k in weights}},
        "vocab-dict": {**state, "vocab": {"<pad>": 0}},
        "arch-list": {**state, "arch": [1, 2]},
        "config-wrong-types": {**state, "config": {"data": {"height": "tall"}}},
        "config-not-dict": {**state, "config": [1, 2]},
    }
    for name, payload in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="not an ssan checkpoint"):
        load_checkpoint(tmp_path / "tensor.pt")
    record_property("cases", len(cases) + 1)


@pytest.mark.parametrize("command", ["test", "export", "index", "search"])
def test_cli_exits_2_with_one_line(command, good, prepared_synth, tmp_path, record_property):
    paths = damaged_files(good, tmp_path / "damaged")
    chosen = ["zero.pt", "truncated-0.5.pt", "random.pt", "plain.zip.pt", "directory.pt"]
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    Image.new("RGB", (16, 32)).save(gallery / "a.png")
    index = None
    if command == "search":
        from ssan.search import build_index

        index = tmp_path / "index"
        build_index(index, good, data=prepared_synth, split="test", progress=False)
    for name in chosen:
        path = paths[name]
        argv = {
            "test": ["test", "--checkpoint", path, "--data", prepared_synth, "--no-progress"],
            "export": ["export", "--checkpoint", path, "--out", tmp_path / "onnx"],
            "index": ["index", "--checkpoint", path, "--images", gallery, "--out", tmp_path / "idx", "--no-progress"],
            "search": ["search", "--index", index, "--checkpoint", path, "a man"],
        }[command]
        code, _, err = run_cli(*argv)
        one_line_error(code, err, command, str(path))
    record_property("cases", len(chosen))


# ---------------------------------------------------------- code execution
class Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def evil_files(folder: Path, marker: Path) -> list:
    raw = folder / "raw-pickle.pt"
    raw.write_bytes(pickle.dumps({"format": "ssan-checkpoint", "model": Payload(marker)}))
    raw_v0 = folder / "raw-pickle-protocol0.pt"
    raw_v0.write_bytes(pickle.dumps(Payload(marker), protocol=0))
    zipped = folder / "torch-zip.pt"
    torch.save(
        {
            "format": "ssan-checkpoint",
            "version": 1,
            "arch": {},
            "vocab": ["<pad>"],
            "model": {"w": torch.zeros(2)},
            "config": Payload(marker),
        },
        zipped,
    )
    exec_pickle = folder / "builtins-exec.pt"
    exec_pickle.write_bytes(b"cbuiltins\nexec\n(Vopen(%r,'w').close()\ntR." % str(marker).encode())
    return [raw, raw_v0, zipped, exec_pickle]


def test_pickles_that_run_code_are_refused(tmp_path, prepared_synth, record_property):
    marker = tmp_path / "PWNED"
    paths = evil_files(tmp_path, marker)
    for path in paths:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
        assert not marker.exists()
        code, _, err = run_cli("test", "--checkpoint", path, "--data", prepared_synth, "--no-progress")
        one_line_error(code, err, "test", str(path))
        code, _, err = run_cli("export", "--checkpoint", path, "--out", tmp_path / "onnx")
        one_line_error(code, err, "export", str(path))
        assert not marker.exists()
    record_property("cases", 3 * len(paths))


@pytest.mark.slow
def test_pickles_refused_in_a_fresh_process(tmp_path, record_property):
    """The same in a separate interpreter (no test-suite state can hide the marker)."""
    marker = tmp_path / "PWNED"
    paths = evil_files(tmp_path, marker)
    for path in paths:
        proc = subprocess.run(
            [sys.executable, "-m", "ssan", "export", "--checkpoint", str(path), "--out", str(tmp_path / "onnx")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        one_line_error(proc.returncode, proc.stderr, "export", str(path))
    assert not marker.exists()
    record_property("cases", len(paths))


# ------------------------------------------------------------ incompatible
@pytest.fixture(scope="module")
def other_prepared(tmp_path_factory):
    """A synthetic set drawn with another seed: its vocabulary differs from the tiny checkpoint's."""
    from ssan.data.prepare import prepare_dataset
    from ssan.data.synth import generate_synthetic

    root = tmp_path_factory.mktemp("other-synth") / "cuhk"
    generate_synthetic(root, ids=12, images_per_id=3, size=(64, 32), seed=5, fmt="cuhk-pedes")
    out = root.parent / "prepared"
    prepare_dataset("cuhk-pedes", root, out)
    return out


def test_other_vocabulary_is_evaluated_with_the_checkpoint_vocabulary(good, state, other_prepared, record_property):
    from ssan.data import load_prepared

    assert load_prepared(other_prepared).vocab.to_list() != list(state["vocab"])
    code, out, err = run_cli("test", "--checkpoint", good, "--data", other_prepared, "--no-progress")
    assert code == 0, err
    assert "queries encoded with the checkpoint's vocabulary" in out and "unknown (dropped)" in out
    assert "unknown" not in err, err  # the summary is printed once, on stdout with the table
    record_property("cases", 1)


def test_other_architecture_is_refused_saying_what_differs(state, prepared_synth, tmp_path, record_property):
    wider = resave(tmp_path / "wider.pt", state, arch={**state["arch"], "embed_dim": 48})
    code, _, err = run_cli("test", "--checkpoint", wider, "--data", prepared_synth, "--no-progress")
    one_line_error(code, err, "test", "do not match the architecture")
    assert "(48" in err or "48)" in err or "48," in err, err
    extra = resave(tmp_path / "extra.pt", state, arch={**state["arch"], "heads": 3})
    code, _, err = run_cli("test", "--checkpoint", extra, "--data", prepared_synth, "--no-progress")
    one_line_error(code, err, "test", "heads")
    vocab = resave(tmp_path / "vocab.pt", state, vocab=list(state["vocab"]) + ["zzz"])
    code, _, err = run_cli("test", "--checkpoint", vocab, "--data", prepared_synth, "--no-progress")
    one_line_error(code, err, "test", "vocabulary")
    record_property("cases", 3)


def test_hostile_architecture_is_refused_without_allocating(state, tmp_path, record_property):
    """An arch claiming terabytes of weights is compared with the file's weights before any allocation."""
    cases = [
        {"vocab_size": 10**12},
        {"embed_dim": 10**9, "hidden_dim": 10**9},
        {"num_parts": 10**7},
        {"embed_dim": "wide"},
        {"backbone": "no-such-net"},
        {"embed_dim": -5},
        {"dropout": 5.0},
        {"cnn_width": 10**6},
    ]
    honest = resave(tmp_path / "honest.pt", state)
    started = time.perf_counter()
    load_model(honest)
    baseline = time.perf_counter() - started  # this machine's time to load the same checkpoint honestly
    for i, change in enumerate(cases):
        path = resave(tmp_path / f"hostile-{i}.pt", state, arch={**state["arch"], **change})
        started = time.perf_counter()
        with pytest.raises(CheckpointError) as info:
            load_model(path)
        elapsed = time.perf_counter() - started
        # Building a terabyte model would take minutes or fail on memory; a refusal costs about as much
        # as an honest load (2 s of slack for a busy machine).
        assert str(path) in str(info.value) and elapsed < 2 + 10 * baseline, (elapsed, baseline)
    record_property("cases", len(cases))


def pooled_norm_state(state: dict) -> dict:
    """``state`` as a version without ``relation_norm`` wrote it: one BatchNorm1d(D) pooled over the parts."""
    arch = {k: v for k, v in state["arch"].items() if k != "relation_norm"}
    dim, parts = arch["embed_dim"], arch["num_parts"]
    model = dict(state["model"])
    for name in ("weight", "bias", "running_mean", "running_var"):
        key = f"relation.norm.{name}"
        model[key] = model[key].view(parts, dim).mean(0)  # any D-wide values: this is another model
    return {**state, "arch": arch, "model": model}


def test_pooled_norm_checkpoint_of_an_older_version_still_loads(state, prepared_synth, tmp_path, record_property):
    old = pooled_norm_state(state)
    path = resave(tmp_path / "pooled.pt", old)
    model, _, _ = load_model(path)
    assert model.relation.norm_kind == "shared" and model.relation.norm.num_features == old["arch"]["embed_dim"]
    torch.testing.assert_close(model.relation.norm.weight, old["model"]["relation.norm.weight"])
    code, out, err = run_cli("test", "--checkpoint", path, "--data", prepared_synth, "--no-progress")
    assert code == 0, err
    record_property("cases", 1)


@pytest.fixture
def copied_run(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    return run


@pytest.mark.slow
def test_resume_with_another_architecture_is_refused(copied_run, tiny_overrides, prepared_synth, record_property):
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    wider = load_config("synth", tiny_overrides + ["model.embed_dim=48"])
    with pytest.raises(CheckpointError) as info:
        Trainer.from_config(wider, prepared_synth, copied_run, device="cpu", resume=True).fit()
    assert "embed_dim" in str(info.value) and "48" in str(info.value)
    record_property("cases", 1)


@pytest.mark.slow
def test_resume_of_a_pooled_norm_run_with_the_per_part_default_is_refused(
    copied_run, tiny_overrides, prepared_synth, record_property
):
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    last = copied_run / "checkpoints" / "last.pt"
    resave(last, pooled_norm_state(load_checkpoint(last)))
    with pytest.raises(CheckpointError) as info:
        Trainer.from_config(
            load_config("synth", tiny_overrides), prepared_synth, copied_run, device="cpu", resume=True
        ).fit()
    assert "relation_norm: 'shared' vs 'per_part'" in str(info.value)
    record_property("cases", 1)


@pytest.mark.slow
def test_resume_with_another_vocabulary_is_refused(copied_run, tiny_overrides, other_prepared, record_property):
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    same = load_config("synth", tiny_overrides)
    with pytest.raises(CheckpointError, match="different vocabulary"):
        Trainer.from_config(same, other_prepared, copied_run, device="cpu", resume=True).fit()
    args = ["train", "--data", other_prepared, "--output", copied_run, "--resume", "--device", "cpu"]
    for item in tiny_overrides:
        args += ["--set", item]
    code, _, err = run_cli(*args)
    one_line_error(code, err, "train", "different vocabulary")
    record_property("cases", 2)


# ------------------------------------------------------------------ data lost
WRITER = (
    HALF_SAVE
    + """
import sys, torch
from ssan.checkpoint import save_checkpoint
save_checkpoint(sys.argv[1], {"arch": {}, "model": {"w": torch.full((200_000,), 2.0)}, "vocab": ["<pad>", "new"]})
"""
)


@pytest.mark.slow
def test_no_data_lost_checkpoint_write_killed_half_way(tmp_path, record_property):
    """SIGKILL while the new checkpoint is half written: the previous file is intact and still loads."""
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"arch": {}, "model": {"w": torch.ones(200_000)}, "vocab": ["<pad>", "old"]})
    before = path.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60  # a hang guard only, generous for a loaded 2-core machine
    temps = []
    while time.monotonic() < deadline and not any(t.stat().st_size > 0 for t in temps):
        time.sleep(0.05)
        temps = list(tmp_path.glob(".last.pt.*.tmp"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert temps, "the writer never reached its half-way pause"
    assert path.read_bytes() == before
    assert load_checkpoint(path)["vocab"] == ["<pad>", "old"]
    with pytest.raises(CheckpointError):
        load_checkpoint(temps[0])  # the half-written temporary is not a usable checkpoint
    save_checkpoint(path, {"arch": {}, "model": {"w": torch.zeros(3)}, "vocab": ["<pad>", "next"]})
    assert load_checkpoint(path)["vocab"] == ["<pad>", "next"]  # a leftover temporary does not get in the way
    record_property("cases", 1)
