"""Torch datasets, weak positives, collate and transforms."""

import pytest
import torch
from PIL import Image

from ssan.data import (
    GalleryDataset,
    QueryDataset,
    TrainDataset,
    build_transforms,
    collate_batch,
    generate_synthetic,
    load_prepared,
    make_loader,
    pad_tokens,
    prepare_dataset,
)
from ssan.errors import DataError


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "cuhk"
    generate_synthetic(root, ids=10, size=(32, 16), captions_per_image=(1, 3))
    prepare_dataset("cuhk-pedes", root)
    return load_prepared(root / "ssan-prepared")


def test_train_samples_and_weak_positive_is_another_image_of_the_same_id(prepared):
    records = prepared.records("train")
    data = TrainDataset(records, prepared.image_root, build_transforms(24, 12, train=True), max_length=5)
    assert len(data) == sum(len(r["tokens"]) for r in records)
    for epoch in range(3):
        for index in range(len(data)):
            record, caption = data.samples[index]
            weak_record, weak_caption = data.weak_choice(index, epoch)
            assert weak_record != record
            assert records[weak_record]["id"] == records[record]["id"]
            assert weak_caption < len(records[weak_record]["tokens"])
    sample = data[3]
    assert set(sample) == {"image", "tokens", "weak_tokens", "label", "id", "index"}
    assert sample["image"].shape == (3, 24, 12) and sample["image"].dtype == torch.float32
    assert -1.0 <= sample["image"].min() and sample["image"].max() <= 1.0
    assert sample["tokens"].dtype == torch.long and 1 <= len(sample["tokens"]) <= 5
    record, caption = data.samples[3]
    assert sample["tokens"].tolist() == records[record]["tokens"][caption][:5]
    assert sample["label"] == records[record]["label"] and sample["index"] == 3


def test_weak_draws_are_reproducible_and_change_with_the_epoch(prepared):
    records = prepared.records("train")
    a = TrainDataset(records, prepared.image_root, build_transforms(8, 4, train=False), seed=1)
    b = TrainDataset(records, prepared.image_root, build_transforms(8, 4, train=False), seed=1)
    first = [a.weak_choice(i) for i in range(len(a))]
    assert first == [b.weak_choice(i) for i in range(len(b))]
    assert first != [a.weak_choice(i, 1) for i in range(len(a))]
    assert [a.weak_choice(i, 1) for i in range(len(a))] == [b.weak_choice(i, 1) for i in range(len(b))]
    # the sample key carries the epoch: a worker process needs no per-epoch message
    key = a.key(2, epoch=1)
    weak_record, weak_caption = a.weak_choice(2, 1)
    assert a[key]["weak_tokens"].tolist() == records[weak_record]["tokens"][weak_caption][:100]
    assert a[key]["index"] == 2 and a[2]["tokens"].tolist() == a[key]["tokens"].tolist()


def test_weak_draw_is_uniform_over_other_captions():
    records = [
        {"image": "a", "id": 1, "label": 0, "captions": ["x"], "tokens": [[1]]},
        {"image": "b", "id": 1, "label": 0, "captions": ["y", "z"], "tokens": [[2], [3]]},
        {"image": "c", "id": 1, "label": 0, "captions": ["w"], "tokens": [[4]]},
    ]
    data = TrainDataset(records, ".", lambda image: image)
    counts = {}
    for epoch in range(3000):
        choice = data.weak_choice(0, epoch)  # sample 0 = record 0: candidates (1,0), (1,1), (2,0)
        counts[choice] = counts.get(choice, 0) + 1
    assert set(counts) == {(1, 0), (1, 1), (2, 0)}
    assert all(abs(c / 3000 - 1 / 3) < 0.04 for c in counts.values())


def test_train_dataset_rejects_single_image_labels_and_missing_labels():
    single = [{"image": "a", "id": 4, "label": 0, "captions": ["x"], "tokens": [[1]]}]
    with pytest.raises(DataError, match="label 0 \\(id 4\\) has a single image"):
        TrainDataset(single, ".", lambda image: image)
    with pytest.raises(DataError, match="has no training label"):
        TrainDataset([{**single[0], "label": None}], ".", lambda image: image)
    with pytest.raises(DataError, match="at least one token"):
        QueryDataset([{**single[0], "tokens": [[]]}])


def test_train_loader_batches(prepared):
    data = TrainDataset(prepared.records("train"), prepared.image_root, build_transforms(24, 12, train=True))
    batch = next(
        iter(make_loader(data, batch_size=6, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(0)))
    )
    assert batch["image"].shape == (6, 3, 24, 12)
    assert batch["tokens"].shape == (6, int(batch["lengths"].max()))
    assert batch["weak_tokens"].shape == (6, int(batch["weak_lengths"].max()))
    for key in ("lengths", "weak_lengths", "label", "id", "index"):
        assert batch[key].dtype == torch.long and batch[key].shape == (6,) and batch[key].device.type == "cpu"
    for row, length in zip(batch["tokens"], batch["lengths"]):
        assert (row[:length] > 0).all() and (row[length:] == 0).all()


def test_gallery_and_query_datasets(prepared):
    records = prepared.records("test")
    gallery = GalleryDataset(records, prepared.image_root, build_transforms(16, 8, train=False))
    queries = QueryDataset(records, max_length=100)
    assert len(gallery) == len(records) and len(queries) == sum(len(r["captions"]) for r in records)
    g = collate_batch([gallery[i] for i in range(len(gallery))])
    assert set(g) == {"image", "id", "index"} and g["image"].shape == (len(records), 3, 16, 8)
    assert g["id"].tolist() == [r["id"] for r in records]
    q = collate_batch([queries[i] for i in range(len(queries))])
    assert set(q) == {"tokens", "lengths", "id", "index", "image_index"}
    assert q["index"].tolist() == list(range(len(queries)))
    assert [records[i]["id"] for i in q["image_index"].tolist()] == q["id"].tolist()
    assert queries.caption(0) == records[0]["captions"][0]


def test_pad_tokens():
    tokens, lengths = pad_tokens([torch.tensor([5, 6, 7]), torch.tensor([8])])
    assert tokens.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]


def test_transforms():
    image = Image.new("RGB", (40, 100), (255, 0, 0))
    out = build_transforms(48, 16, train=False)(image)
    assert out.shape == (3, 48, 16)
    assert torch.allclose(out[0], torch.ones(48, 16)) and torch.allclose(out[1], -torch.ones(48, 16))
    assert "RandomHorizontalFlip" in repr(build_transforms(48, 16, train=True))
    assert "RandomHorizontalFlip" not in repr(build_transforms(48, 16, train=True, flip=False))
    assert "BICUBIC" in repr(build_transforms(48, 16, train=False)).upper()
