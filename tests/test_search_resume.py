"""An interrupted ``ssan index`` keeps its encoded batches: a rerun (or ``--add``) encodes only the rest."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from helpers import run_cli, save_random_checkpoint
from ssan.search import GalleryIndex, build_index
from ssan.search import builder as builder_module
from ssan.search.journal import PARTIAL_DIR, EncodingJournal

BATCH = 2


@pytest.fixture(scope="module")
def photos(synth_root, tmp_path_factory):
    """11 images and a broken file (12 files, 6 batches of 2)."""
    root = tmp_path_factory.mktemp("resume") / "photos"
    root.mkdir()
    for image in sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:11]:
        shutil.copy(image, root / image.name)
    (root / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


@pytest.fixture(scope="module")
def checkpoint(prepared_synth, photos):
    return save_random_checkpoint(photos.parent / "m.pt", prepared_synth, seed=0)  # random weights suffice


@pytest.fixture()
def encoded(monkeypatch):
    """The paths handed to the image encoder, per build."""
    calls = []
    original = builder_module.encode_images_distributed

    def counting(encoders, paths, *args, **kwargs):
        calls.append([str(p) for p in paths])
        return original(encoders, paths, *args, **kwargs)

    monkeypatch.setattr(builder_module, "encode_images_distributed", counting)
    return calls


def _interrupt_after(monkeypatch, batches: int) -> None:
    """Ctrl-C right after the journal kept ``batches`` batches."""
    original, seen = EncodingJournal.record, []

    def record(self, *args):
        original(self, *args)
        seen.append(1)
        if len(seen) == batches:
            raise KeyboardInterrupt

    monkeypatch.setattr(EncodingJournal, "record", record)


def _digests(folder) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _same_index(a, b) -> None:
    first, second = GalleryIndex.load(a), GalleryIndex.load(b)
    assert first.entries == second.entries and first.meta["skipped"] == second.meta["skipped"]
    np.testing.assert_array_equal(np.asarray(first.features), np.asarray(second.features))


def test_a_rerun_encodes_only_what_the_interrupted_build_did_not(photos, checkpoint, tmp_path, monkeypatch, encoded):
    whole = build_index(tmp_path / "whole", checkpoint, images=photos, batch_size=BATCH, progress=False)
    assert len(whole) == 11 and not (tmp_path / "whole" / PARTIAL_DIR).exists()  # removed once complete
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "idx", checkpoint, images=photos, batch_size=BATCH, progress=False)
    assert not (tmp_path / "idx" / "meta.json").exists()  # no index until the job completes
    assert len(list((tmp_path / "idx" / PARTIAL_DIR).glob("batch-*.npz"))) == 3
    encoded.clear()
    build_index(tmp_path / "idx", checkpoint, images=photos, batch_size=BATCH, progress=False)
    assert [len(paths) for paths in encoded] == [12 - 3 * BATCH]  # only the rest
    assert sorted(encoded[0]) == sorted(str(p) for p in sorted(photos.iterdir())[3 * BATCH :])
    _same_index(tmp_path / "whole", tmp_path / "idx")
    assert not (tmp_path / "idx" / PARTIAL_DIR).exists()


def test_an_interrupted_add_leaves_the_index_unchanged_and_add_continues(
    photos, checkpoint, tmp_path, monkeypatch, encoded
):
    first = tmp_path / "first"  # another folder: its 4 images are other paths than the photos'
    first.mkdir()
    for name in sorted(p.name for p in photos.iterdir())[:4]:
        shutil.copy(photos / name, first / name)
    build_index(tmp_path / "idx", checkpoint, images=first, batch_size=BATCH, progress=False)
    before = _digests(tmp_path / "idx")
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "idx", checkpoint, images=photos, add=True, batch_size=BATCH, progress=False)
    assert _digests(tmp_path / "idx") == before  # meta.json and the data files untouched
    encoded.clear()
    added = build_index(tmp_path / "idx", checkpoint, images=photos, add=True, batch_size=BATCH, progress=False)
    assert [len(paths) for paths in encoded] == [12 - 2 * BATCH]  # the photos the interrupted add had not done
    assert len(added) == 4 + 11


def test_batches_of_other_encoders_are_discarded(photos, checkpoint, prepared_synth, tmp_path, monkeypatch, encoded):
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            build_index(tmp_path / "idx", checkpoint, images=photos, batch_size=BATCH, progress=False)
    other = save_random_checkpoint(tmp_path / "other.pt", prepared_synth, seed=1)
    encoded.clear()
    build_index(tmp_path / "idx", other, images=photos, batch_size=BATCH, progress=False)
    assert [len(paths) for paths in encoded] == [12]  # everything again, with the other weights
    build_index(tmp_path / "ref", other, images=photos, batch_size=BATCH, progress=False)
    _same_index(tmp_path / "ref", tmp_path / "idx")


def test_ssan_index_interrupted_says_so_on_its_own_line_and_the_rerun_continues(
    photos, checkpoint, tmp_path, monkeypatch
):
    args = ["index", "--images", photos, "--checkpoint", checkpoint, "--out", tmp_path / "idx"]
    args += ["--batch-size", BATCH, "--workers", 0, "--device", "cpu"]
    with monkeypatch.context() as patch:
        _interrupt_after(patch, 2)
        code, _, err = run_cli(*args)
    assert code == 130 and "encoding images" in err, err  # the progress bar was drawn
    assert "\nssan index: interrupted\n" in err.replace("\r", "\n"), repr(err)
    assert "encoding images" not in err.splitlines()[-1], repr(err)  # not glued to the bar's line
    code, out, err = run_cli(*args, "--no-progress")
    assert code == 0 and "continuing an interrupted job: 4 image(s) already encoded" in err, err
    assert "index: " in out and "(11 images" in out
