"""Retrieval evaluation: per-term metrics from features, chunking, the model path and `ssan test`."""

from __future__ import annotations

import json

import pytest
import torch

from ssan import cli
from ssan.errors import DataError
from ssan.evaluation import (
    RankMetricAccumulator,
    encode_gallery,
    encode_queries,
    evaluate,
    evaluate_checkpoint,
    evaluate_features,
    format_metrics_table,
    rank_metrics,
    similarity_rows,
)
from ssan.models import SSAN, similarity

METRICS = {"R1", "R5", "R10", "mAP", "mINP", "mAP_trapezoid"}
TINY_ARCH = {"num_parts": 2, "embed_dim": 8, "word_dim": 8, "hidden_dim": 16, "backbone": "small", "cnn_width": 4}


def random_features(generator, count, parts=True):
    feats = {"global": torch.randn(count, 6, generator=generator)}
    if parts:
        feats["parts"] = torch.randn(count, 3, 6, generator=generator)
        feats["relation"] = torch.randn(count, 3, 3, generator=generator)
    return feats


@pytest.fixture()
def feature_case():
    generator = torch.Generator().manual_seed(0)
    gallery_ids = torch.arange(30) // 3
    query_ids = gallery_ids[torch.randint(0, 30, (45,), generator=generator)]
    return random_features(generator, 30), random_features(generator, 45), query_ids, gallery_ids


def test_per_term_and_sum_equal_rank_metrics_of_each_similarity(feature_case):
    images, texts, qids, gids = feature_case
    results = evaluate_features(images, texts, qids, gids, i2t=True)
    assert set(results["t2i"]) == {"global", "parts", "relation", "sum"}
    assert (results["num_queries"], results["num_gallery"]) == (45, 30)
    for term in ("global", "parts", "relation"):
        sim = similarity(images, texts, term)
        assert results["t2i"][term] == pytest.approx(rank_metrics(sim, qids, gids))
        assert results["i2t"][term] == pytest.approx(rank_metrics(sim.T, gids, qids))
    summed = sum(similarity(images, texts, term) for term in ("global", "parts", "relation"))
    assert results["t2i"]["sum"] == pytest.approx(rank_metrics(summed, qids, gids))
    assert set(results["t2i"]["sum"]) == METRICS


def test_memory_budget_chunks_rows_and_changes_nothing(feature_case, monkeypatch):
    images, texts, qids, gids = feature_case
    unchunked = evaluate_features(images, texts, qids, gids, i2t=True, memory_budget_mb=1024)
    shapes = []
    original = RankMetricAccumulator.process

    def spy(self, sim, query_ids, gallery_ids):
        shapes.append(tuple(sim.shape))
        return original(self, sim, query_ids, gallery_ids)

    monkeypatch.setattr(RankMetricAccumulator, "process", spy)
    budget_mb = 7 * 30 * 4 / 2**20  # seven rows of 30 float32 scores
    chunked = evaluate_features(images, texts, qids, gids, i2t=True, memory_budget_mb=budget_mb)
    assert chunked == unchunked
    assert max(rows for rows, cols in shapes if cols == 30) == 7
    assert similarity_rows(30, budget_mb) == 7 and similarity_rows(10**9, 1) == 1
    with pytest.raises(ValueError, match="positive"):
        similarity_rows(10, 0)


def test_global_only_model_reports_global_and_sum():
    generator = torch.Generator().manual_seed(1)
    images, texts = random_features(generator, 12, parts=False), random_features(generator, 20, parts=False)
    gids = torch.arange(12) // 2
    qids = gids[torch.randint(0, 12, (20,), generator=generator)]
    results = evaluate_features(images, texts, qids, gids)
    assert set(results["t2i"]) == {"global", "sum"}
    assert results["t2i"]["sum"] == results["t2i"]["global"]
    assert "i2t" not in results


def test_terms_must_be_present(feature_case):
    images, texts, qids, gids = feature_case
    with pytest.raises(ValueError, match="absent"):
        evaluate_features({"global": images["global"]}, {"global": texts["global"]}, qids, gids, terms=["parts"])
    with pytest.raises(ValueError, match="differ"):
        evaluate_features(images, {"global": texts["global"]}, qids, gids)


def test_format_metrics_table(feature_case):
    images, texts, qids, gids = feature_case
    table = format_metrics_table(evaluate_features(images, texts, qids, gids, i2t=True))
    lines = table.splitlines()
    assert lines[0].startswith("text -> image (45 queries x 30 gallery)")
    assert lines[1].split() == ["term", "R1", "R5", "R10", "mAP", "mINP", "mAP_trapezoid"]
    assert [line.split()[0] for line in lines[2:6]] == ["global", "parts", "relation", "sum"]
    assert "image -> text (30 queries x 45 gallery)" in table


# ---------------------------------------------------------------- model path
def tiny_model(vocab_size, parts=True):
    torch.manual_seed(0)
    return SSAN(vocab_size, parts=parts, **TINY_ARCH)


def test_encoders_restore_mode_and_keep_order(prepared_synth):
    from ssan.data import build_transforms, load_prepared

    prepared = load_prepared(prepared_synth)
    records = prepared.records("test")
    model = tiny_model(len(prepared.vocab)).train()
    transform = build_transforms(32, 16, train=False)
    gallery = encode_gallery(model, records, prepared.image_root, transform, "cpu", batch_size=5, progress=False)
    queries = encode_queries(model, records, "cpu", batch_size=7, progress=False)
    assert model.training
    assert gallery["ids"].tolist() == [r["id"] for r in records]
    assert gallery["feats"]["parts"].shape == (len(records), 2, 8)
    captions = [(r["id"], i) for i, r in enumerate(records) for _ in r["tokens"]]
    assert queries["ids"].tolist() == [c[0] for c in captions]
    assert queries["image_index"].tolist() == [c[1] for c in captions]
    assert not gallery["feats"]["global"].requires_grad


def test_evaluate_model_on_prepared_split(prepared_synth):
    from ssan.data import load_prepared

    prepared = load_prepared(prepared_synth)
    model = tiny_model(len(prepared.vocab), parts=False)
    results = evaluate(
        model, prepared, split="val", device="cpu", batch_size=16, height=32, width=16, i2t=True, progress=False
    )
    assert results["split"] == "val" and set(results["t2i"]) == {"global", "sum"}
    assert results["num_gallery"] == len(prepared.records("val"))
    assert all(0.0 <= value <= 100.0 for value in results["i2t"]["global"].values())
    with pytest.raises(DataError, match="available splits: train, val, test"):
        evaluate(model, prepared, split="dev", device="cpu")


@pytest.fixture()
def handmade_checkpoint(prepared_synth, tmp_path):
    """A random-init tiny SSAN saved in the checkpoint schema (fast, no training)."""
    from ssan.checkpoint import save_checkpoint
    from ssan.config import Config
    from ssan.data import load_prepared

    prepared = load_prepared(prepared_synth)
    model = tiny_model(len(prepared.vocab))
    config = Config()
    config.data.height, config.data.width, config.data.eval_batch_size = 32, 16, 8
    state = {
        "arch": model.arch,
        "model": model.state_dict(),
        "vocab": prepared.vocab.to_list(),
        "dataset": {"name": prepared.name, "num_classes": prepared.num_classes, "vocab_size": len(prepared.vocab)},
        "config": config.to_dict(),
        "epoch": 3,
        "metrics": {},
        "best": None,
    }
    return save_checkpoint(tmp_path / "tiny.pt", state)


def test_evaluate_checkpoint_with_its_own_or_another_vocabulary(handmade_checkpoint, prepared_synth, tmp_path):
    results = evaluate_checkpoint(handmade_checkpoint, prepared_synth, device="cpu", progress=False)
    assert results["epoch"] == 3 and results["checkpoint"] == str(handmade_checkpoint)
    assert set(results["t2i"]) == {"global", "parts", "relation", "sum"} and "vocabulary" not in results
    state = torch.load(handmade_checkpoint, weights_only=True)
    lost = state["vocab"][-1]
    state["vocab"] = state["vocab"][:-1] + ["zzz-not-a-word"]
    from ssan.checkpoint import save_checkpoint
    from ssan.data import load_prepared

    other = save_checkpoint(tmp_path / "other.pt", {k: v for k, v in state.items() if k not in ("format", "version")})
    results = evaluate_checkpoint(other, prepared_synth, device="cpu", progress=False)
    words = [w for r in load_prepared(prepared_synth).records("test") for c in r["words"] for w in c]
    assert results["vocabulary"]["unknown_words"] == words.count(lost) > 0


@pytest.fixture()
def main(monkeypatch):
    """The real ``ssan`` entry point, with only the ``test`` sub-command registered."""
    monkeypatch.setattr(cli, "COMMANDS", ("test",))
    return cli.main


def test_cli_test_table_json_and_errors(handmade_checkpoint, prepared_synth, capsys, main):
    base = [
        "test",
        "--checkpoint",
        str(handmade_checkpoint),
        "--data",
        str(prepared_synth),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(base) == 0
    table = capsys.readouterr().out
    assert "test: text -> image" in table and "relation" in table and "mINP" in table
    assert main(base + ["--json", "--i2t", "--split", "val", "--memory-budget-mb", "0.001"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["split"] == "val" and set(payload["i2t"]["sum"]) == METRICS
    assert main(base + ["--split", "dev"]) == 2
    assert "available splits: train, val, test" in capsys.readouterr().err
    assert main(base + ["--memory-budget-mb", "0"]) == 2


@pytest.mark.slow
def test_cli_test_on_trained_checkpoint(tiny_checkpoint, prepared_synth, capsys, main):
    assert (
        main(
            [
                "test",
                "--checkpoint",
                str(tiny_checkpoint),
                "--data",
                str(prepared_synth),
                "--json",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    payload = json.loads(capsys.readouterr().out)
    for term in ("global", "parts", "relation", "sum"):
        assert set(payload["t2i"][term]) == METRICS


# ---------------------------------------------------------------- cross-domain (another vocabulary)
@pytest.fixture(scope="module")
def other_domain(tmp_path_factory):
    """A synthetic set of another seed and format: its train vocabulary differs from the shared set's."""
    from ssan.data import generate_synthetic, prepare_dataset

    root = tmp_path_factory.mktemp("domain") / "rstp"
    generate_synthetic(root, ids=6, images_per_id=2, size=(32, 16), seed=9, fmt="rstpreid")
    prepare_dataset("rstpreid", root, root.parent / "prepared")
    return root.parent / "prepared"


def test_cross_vocabulary_evaluation_re_encodes_the_words(prepared_synth, other_domain):
    from ssan.data import load_prepared
    from ssan.data.prepared import reencode_records

    source, target = load_prepared(prepared_synth), load_prepared(other_domain)
    assert source.vocab != target.vocab
    records = target.records("test")
    words = [w for r in records for caption in r["words"] for w in caption]
    gained = {w for w in words if w in source.vocab and w not in target.vocab}
    assert gained, "the test needs words the model knows but the target's own vocabulary dropped"
    model = tiny_model(len(source.vocab))
    results = evaluate(
        model, target, device="cpu", batch_size=16, height=32, width=16, progress=False, vocab=source.vocab
    )
    report = results["vocabulary"]
    assert report["query_words"] == len(words) and report["exact"]
    assert report["unknown_words"] == sum(w not in source.vocab for w in words)
    assert results["num_gallery"] == len(records)  # every image stays in the gallery
    queries, _ = reencode_records(records, target.vocab, source.vocab, max_length=100)
    assert results["num_queries"] == sum(len(r["tokens"]) for r in queries)
    decoded = {w for r in queries for ids in r["tokens"] for w in source.vocab.decode(ids)}
    assert gained <= decoded  # words unknown to the target's vocabulary still reach the model
    from ssan.data import build_transforms

    gallery = encode_gallery(
        model, records, target.image_root, build_transforms(32, 16, train=False), "cpu", progress=False
    )
    texts = encode_queries(model, queries, "cpu", progress=False)
    direct = evaluate_features(gallery["feats"], texts["feats"], texts["ids"], gallery["ids"])
    assert results["t2i"] == direct["t2i"]


def test_reencode_without_kept_words_decodes_and_says_so():
    from ssan.data import Vocabulary
    from ssan.data.prepared import reencode_records

    source = Vocabulary(["<pad>", "red", "shirt", "hat"])
    model_vocab = Vocabulary(["<pad>", "shirt", "blue"])
    records = [{"image": "a.png", "id": 1, "label": None, "captions": ["red shirt", "hat"], "tokens": [[1, 2], [3]]}]
    queries, report = reencode_records(records, source, model_vocab, max_length=10)
    assert report == {"query_words": 3, "unknown_words": 2, "dropped_captions": 1, "exact": False}
    assert queries[0]["tokens"] == [[1]] and queries[0]["captions"] == ["red shirt"]
