"""Gallery index and searcher: folders, prepared splits, exact scores, adds, refusals, queries."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import save_random_checkpoint
from ssan.errors import SsanError
from ssan.search import GalleryIndex, GalleryIndexError, IndexSpec, QueryError, Searcher, ann, build_index
from ssan.search.files import find_images


@pytest.fixture(scope="module")
def random_checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random.pt", prepared_synth, seed=0)


@pytest.fixture(scope="module")
def other_checkpoint(prepared_synth, tmp_path_factory):
    return save_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "other.pt", prepared_synth, seed=1)


@pytest.fixture(scope="module")
def gallery(synth_root, tmp_path_factory):
    """12 real images in nested folders, odd suffix cases, a broken file, a text file and links."""
    root = tmp_path_factory.mktemp("gallery") / "photos"
    images = sorted(p for p in (synth_root / "imgs").rglob("*") if p.is_file())[:12]
    for number, image in enumerate(images):
        target = (
            root / f"cam{number % 3}" / (f"img{number:02d}" + (image.suffix.upper() if number % 2 else image.suffix))
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (root / "notes.txt").write_text("not an image")
    outside = root.parent / "secret.png"
    shutil.copy(images[0], outside)
    (root / "escape.png").symlink_to(outside)
    (root / "cam0" / "inside_link.png").symlink_to(root / "cam1" / f"img01{images[1].suffix.upper()}")
    return root


def test_find_images_recursive_case_insensitive_and_refuses_escaping_links(gallery):
    paths, refused = find_images(gallery)
    names = sorted(p.name for p in paths)
    assert len(paths) == 13  # 12 copies + the broken file; the inside link is the same file as img01
    assert "broken.jpg" in names and "notes.txt" not in names
    assert any(n.endswith(".PNG") or n.endswith(".JPG") for n in names)
    assert all(p.is_relative_to(gallery.resolve()) for p in paths)
    assert [Path(p).name for p, _ in refused] == ["escape.png"]
    assert "outside" in refused[0][1]


def test_index_folder_skips_unreadable_files_with_a_warning(gallery, random_checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        index = build_index(tmp_path / "idx", random_checkpoint, images=gallery, progress=False)
    assert len(index) == 12
    assert "broken.jpg" in caplog.text and "escape.png" in caplog.text
    skipped = {Path(s["path"]).name for s in index.meta["skipped"]}
    assert skipped == {"broken.jpg", "escape.png"}
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["layout"]["terms"] == ["global", "parts", "relation"]
    assert meta["layout"]["widths"] == [32, 6 * 32, 6 * 16] and meta["layout"]["dim"] == 320
    assert meta["encode"] == {"height": 64, "width": 32, "max_length": 40}
    assert meta["checkpoint"] == str(Path(random_checkpoint).resolve())
    assert all(e["id"] is None for e in meta["entries"])
    features = np.load(tmp_path / "idx" / meta["files"]["features"])
    assert features.dtype == np.float32 and features.shape == (12, 320)


def _reference_scores(checkpoint, paths, query):
    """SSAN similarity of ``query`` to each image, computed without the index."""
    from ssan.checkpoint import load_model
    from ssan.data import build_transforms, load_rgb
    from ssan.models import similarity

    model, vocab, _ = load_model(checkpoint)
    transform = build_transforms(64, 32, train=False)
    images = torch.stack([transform(load_rgb(p)) for p in paths])
    ids, _ = vocab.encode(query)
    with torch.no_grad():
        text = model.encode_text(torch.tensor([ids]), torch.tensor([len(ids)]))
        return similarity(model.encode_image(images), text)[0].numpy()


def test_exact_index_scores_equal_ssan_similarity(gallery, random_checkpoint, tmp_path):
    build_index(tmp_path / "idx", random_checkpoint, images=gallery, progress=False)
    searcher = Searcher(tmp_path / "idx")
    query = "a woman in a red coat with black trousers"
    answer = searcher.search(query, k=100)
    assert len(answer["results"]) == 12 and [r["rank"] for r in answer["results"]] == list(range(1, 13))
    scores = [r["score"] for r in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    reference = _reference_scores(random_checkpoint, [r["path"] for r in answer["results"]], query)
    np.testing.assert_allclose(scores, reference, atol=1e-5)


def _top1_hits(searcher, records) -> list:
    """For every caption of ``records``: is the first result of its identity?"""
    return [
        searcher.search(caption, k=1)["results"][0]["id"] == record["id"]
        for record in records
        for caption in record["captions"]
    ]


def test_prepared_split_keeps_identities(prepared_synth, random_checkpoint, tmp_path):
    from ssan.data import load_prepared

    index = build_index(tmp_path / "idx", random_checkpoint, data=prepared_synth, split="val", progress=False)
    records = load_prepared(prepared_synth).records("val")
    assert [e["id"] for e in index.entries] == [r["id"] for r in records]
    assert [e["name"] for e in index.entries] == [r["image"] for r in records]
    answer = Searcher(tmp_path / "idx").search(records[0]["captions"][0], k=3)
    assert all(r["id"] in {rec["id"] for rec in records} for r in answer["results"])


@pytest.mark.slow
def test_search_rank1_equals_the_evaluation_of_the_same_checkpoint(prepared_synth, tiny_checkpoint, tmp_path):
    from ssan.data import load_prepared
    from ssan.evaluation import evaluate_checkpoint

    build_index(tmp_path / "idx", tiny_checkpoint, data=prepared_synth, split="test", progress=False)
    hits = _top1_hits(Searcher(tmp_path / "idx"), load_prepared(prepared_synth).records("test"))
    expected = evaluate_checkpoint(tiny_checkpoint, prepared_synth, split="test", progress=False)
    assert 100 * np.mean(hits) == pytest.approx(expected["t2i"]["sum"]["R1"], abs=100 / len(hits) + 1e-9)


@pytest.fixture(scope="module")
def trained_checkpoint(prepared_synth, tmp_path_factory):
    """A tiny SSAN trained 10 epochs on the synthetic train split (enough to learn its identities)."""
    from ssan.config import load_config
    from ssan.engine.trainer import Trainer

    overrides = [
        "data.batch_size=16",
        "data.eval_batch_size=64",
        "data.num_workers=0",
        "model.embed_dim=32",
        "model.word_dim=16",
        "model.hidden_dim=32",
        "model.cnn_width=8",
        "optim.epochs=10",
        "optim.milestones=[100]",
        "optim.lr=3e-3",
        "optim.backbone_lr=3e-3",
        "train.eval_every=10",
    ]
    run = tmp_path_factory.mktemp("trained") / "run"
    Trainer.from_config(load_config("synth", overrides), prepared_synth, run, device="cpu").fit()
    return run / "checkpoints" / "last.pt"


@pytest.mark.slow
def test_index_then_search_ranks_the_right_identity_first(prepared_synth, trained_checkpoint, tmp_path):
    from ssan.data import load_prepared

    records = load_prepared(prepared_synth).records("train")
    build_index(tmp_path / "idx", trained_checkpoint, data=prepared_synth, split="train", progress=False)
    hits = _top1_hits(Searcher(tmp_path / "idx"), records)
    ids = [r["id"] for r in records]
    chance = np.mean([ids.count(r["id"]) / len(ids) for r in records for _ in r["captions"]])
    assert np.mean(hits) >= max(0.3, 5 * chance), f"right identity first for {np.mean(hits):.0%} (chance {chance:.0%})"


def test_incremental_add_encodes_only_new_images(gallery, random_checkpoint, tmp_path, monkeypatch):
    import ssan.search.builder as builder

    part = tmp_path / "part"
    shutil.copytree(gallery / "cam0", part / "cam0")
    first = build_index(tmp_path / "idx", random_checkpoint, images=part, progress=False)
    before = np.asarray(first.features).copy()
    shutil.copytree(gallery / "cam1", part / "cam1")
    encoded = []
    original = builder.encode_images_distributed

    def counting(encoders, paths, transform, **kwargs):
        encoded.extend(paths)
        return original(encoders, paths, transform, **kwargs)

    monkeypatch.setattr(builder, "encode_images_distributed", counting)
    added = build_index(tmp_path / "idx", random_checkpoint, images=part, add=True, progress=False)
    assert sorted(p.parent.name for p in encoded) == ["cam1"] * 4
    assert len(added) == len(first) + 4
    np.testing.assert_array_equal(np.asarray(added.features)[: len(first)], before)
    fresh = build_index(tmp_path / "fresh", random_checkpoint, images=part, progress=False)
    by_path = {e["path"]: row for row, e in enumerate(fresh.entries)}
    rows = [by_path[e["path"]] for e in added.entries]
    np.testing.assert_allclose(np.asarray(added.features), np.asarray(fresh.features)[rows], atol=1e-6)
    again = build_index(tmp_path / "idx", random_checkpoint, images=part, add=True, progress=False)
    assert len(again) == len(added)


def test_index_built_with_another_checkpoint_is_refused(gallery, random_checkpoint, other_checkpoint, tmp_path):
    build_index(tmp_path / "idx", random_checkpoint, images=gallery / "cam0", progress=False)
    with pytest.raises(GalleryIndexError, match="built with checkpoint .*fingerprint"):
        build_index(tmp_path / "idx", other_checkpoint, images=gallery, add=True, progress=False)
    with pytest.raises(GalleryIndexError, match="not comparable"):
        Searcher(tmp_path / "idx", checkpoint=other_checkpoint)
    with pytest.raises(GalleryIndexError, match="--add .* --overwrite"):
        build_index(tmp_path / "idx", random_checkpoint, images=gallery, progress=False)
    replaced = build_index(tmp_path / "idx", other_checkpoint, images=gallery, overwrite=True, progress=False)
    assert len(replaced) == 12


def test_missing_or_corrupt_index_gives_clear_errors(tmp_path):
    with pytest.raises(GalleryIndexError, match="not a gallery index"):
        GalleryIndex.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(GalleryIndexError, match="cannot read"):
        GalleryIndex.load(tmp_path)


@pytest.fixture()
def one_faiss_thread():
    """FAISS's OpenMP threads only slow tiny trainings down (and stall on a busy machine)."""
    faiss = ann.faiss_module()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.mark.parametrize("kind", ["ivfpq", "hnsw"])
def test_approximate_index_reports_recall_and_exact_rescoring(
    synth_root, random_checkpoint, tmp_path, kind, one_faiss_thread
):
    spec = IndexSpec(kind=kind, m=16, nbits=4, nprobe=2)
    index = build_index(
        tmp_path / kind, random_checkpoint, images=synth_root / "imgs", spec=spec, recall_queries=50, progress=False
    )
    recall = index.meta["index"]["recall@10"]
    assert 0.0 <= recall <= 1.0 and index.meta["index"]["recall_queries"] == "images"
    files = index.meta["files"]
    assert (tmp_path / kind / files["faiss"]).is_file() and (tmp_path / kind / files["queries"]).is_file()
    reloaded = GalleryIndex.load(tmp_path / kind)
    queries = np.asarray(reloaded.queries[:5])
    scores, rows = reloaded.search(queries, 10)
    exact = np.einsum("qf,qkf->qk", queries, np.asarray(reloaded.features)[rows])
    np.testing.assert_allclose(scores, exact, atol=1e-5)  # hnsw stores floats; ivfpq re-scores exactly
    assert ann.recall_at_k(ann.exact_top_k(np.asarray(reloaded.features), queries, 10), rows) <= 1.0


def test_ivfpq_refuses_a_gallery_too_small_to_train(gallery, random_checkpoint, tmp_path):
    with pytest.raises(SsanError, match="IVF-PQ needs at least 256"):
        build_index(tmp_path / "idx", random_checkpoint, images=gallery, spec=IndexSpec(kind="ivfpq"), progress=False)


def test_prepared_split_recall_uses_its_captions(prepared_synth, random_checkpoint, tmp_path):
    index = build_index(
        tmp_path / "idx",
        random_checkpoint,
        data=prepared_synth,
        split="test",
        spec=IndexSpec(kind="hnsw"),
        progress=False,
    )
    assert index.meta["index"]["recall_queries"] == "captions"
    assert index.meta["index"]["recall@10"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def searcher(gallery, random_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("search") / "idx"
    build_index(out, random_checkpoint, images=gallery, progress=False)
    return Searcher(out)


@pytest.mark.parametrize(
    "query, message",
    [
        ("", "empty"),
        ("   \n\t", "empty"),
        ("🙂🙂 🎉", "no words"),
        ("zzqx blorf", "vocabulary"),
        ("!!! ??? ...", "no words"),
    ],
)
def test_unusable_queries_raise_query_error(searcher, query, message):
    with pytest.raises(QueryError, match=message):
        searcher.search(query)


@pytest.mark.parametrize("k", [0, -3, 2.5, "5", True])
def test_bad_k_raises_query_error(searcher, k):
    with pytest.raises(QueryError, match="k must be"):
        searcher.search("a man in black", k=k)


def test_long_query_is_truncated_not_fatal(searcher):
    answer = searcher.search("a man in a black coat " * 1800, k=3)  # about 10,000 characters
    assert answer["truncated"] and len(answer["tokens"]) == 40 and len(answer["results"]) == 3


def test_answer_reports_unknown_words_tokens_and_attention(searcher):
    answer = searcher.search("A man in a black coat and zzqx shoes", k=50)
    assert len(answer["results"]) == 12  # k is capped by the gallery size
    assert answer["unknown_words"] == ["zzqx"]
    assert answer["tokens"][:4] == ["a", "man", "in", "a"]
    assert sorted(answer["attention"]) == [f"part_{k}" for k in range(1, 7)]
    for pairs in answer["attention"].values():
        assert [w for w, _ in pairs] == answer["tokens"]
        assert all(0.0 <= s <= 1.0 for _, s in pairs)
    json.dumps(answer)  # plain data


def test_search_is_thread_safe(searcher):
    from concurrent.futures import ThreadPoolExecutor

    queries = ["a man in black", "a woman in a red coat", "white shoes and a blue bag"] * 6
    expected = {q: searcher.search(q, k=5)["results"] for q in set(queries)}
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda q: searcher.search(q, k=5), queries))
    for query, answer in zip(queries, answers):
        assert answer["results"] == expected[query]


def _run_command(name, argv):
    import argparse
    import importlib

    module = importlib.import_module(f"ssan.commands.{name}")
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv))


def test_cli_index_and_search(gallery, random_checkpoint, tmp_path, capsys):
    out = tmp_path / "idx"
    assert (
        _run_command(
            "index",
            ["--checkpoint", str(random_checkpoint), "--images", str(gallery), "--out", str(out), "--no-progress"],
        )
        == 0
    )
    assert "12 images, flat" in capsys.readouterr().out
    sheet, attention = tmp_path / "sheet.png", tmp_path / "attention.png"
    assert (
        _run_command(
            "search",
            [
                "--index",
                str(out),
                "a man in a black coat qqqz",
                "-k",
                "3",
                "--sheet",
                str(sheet),
                "--attention",
                str(attention),
            ],
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "unknown words (ignored): qqqz" in text and "part 6:" in text
    assert text.count(str(gallery.resolve())) == 3
    assert sheet.stat().st_size > 0 and attention.stat().st_size > 0
    assert _run_command("search", ["--index", str(out), "a man", "--json", "-k", "2"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert len(answer["results"]) == 2 and answer["tokens"] == ["a", "man"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_RANK_SCRIPT = """
import sys
from ssan import distributed
from ssan.search.builder import build_index
distributed.init_distributed("cpu")  # as an entry point does
build_index(sys.argv[1], sys.argv[2], images=sys.argv[3], progress=False)
distributed.cleanup()
"""


def _run_two_ranks(out, checkpoint, gallery) -> list:
    """Launch the two ranks like torchrun would; returns [(returncode, stderr)] per rank."""
    port, procs = _free_port(), []
    for rank in range(2):
        env = {
            **os.environ,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _RANK_SCRIPT, str(out), str(checkpoint), str(gallery)],
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    errors = [proc.communicate(timeout=240)[1] for proc in procs]
    return [(proc.returncode, err) for proc, err in zip(procs, errors)]


@pytest.mark.slow
def test_distributed_indexing_with_two_gloo_processes(gallery, random_checkpoint, tmp_path):
    out = tmp_path / "dist"
    for _ in range(3):  # the free port can be taken by another process before rank 0 binds it
        outcome = _run_two_ranks(out, random_checkpoint, gallery)
        if all(code == 0 for code, _ in outcome) or not any(
            "address already in use" in err.lower() for _, err in outcome
        ):
            break
    for code, err in outcome:
        assert code == 0, err[-3000:]
    single = build_index(tmp_path / "single", random_checkpoint, images=gallery, progress=False)
    merged = GalleryIndex.load(out)
    assert [e["path"] for e in merged.entries] == [e["path"] for e in single.entries]
    np.testing.assert_allclose(np.asarray(merged.features), np.asarray(single.features), atol=1e-5)
    assert {Path(s["path"]).name for s in merged.meta["skipped"]} == {"broken.jpg", "escape.png"}
