"""Rank-k / mAP / mINP: hand-computed cases, a naive sort-based reference, chunking, inputs.

Every test runs twice on the CPU: with the compiled (Numba) kernel and with the NumPy path.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssan.evaluation import RankMetricAccumulator, _compiled, _ranking, rank_metrics, set_rank_kernel

HAS_NUMBA = importlib.util.find_spec("numba") is not None


@pytest.fixture(scope="module", autouse=True, params=["numba", "numpy"])
def cpu_kernel(request):
    """Runs the module's tests once per CPU path (module scope: hypothesis-friendly)."""
    if request.param == "numba" and not HAS_NUMBA:
        pytest.skip("Numba is not installed (pip install 'ssan[fast]')")
    previous = set_rank_kernel(request.param)
    assert _compiled.kernel_name() == request.param
    yield request.param
    set_rank_kernel(previous)


def naive_metrics(similarity, query_ids, gallery_ids, ks=(1, 5, 10)):
    """Obviously-correct reference: a stable descending sort per query, then the definitions."""
    sim = np.asarray(similarity, dtype=np.float64)
    query_ids, gallery_ids = np.asarray(query_ids), np.asarray(gallery_ids)
    first, aps, inps = [], [], []
    for i, qid in enumerate(query_ids):
        order = np.argsort(-sim[i], kind="stable")  # ties: earlier gallery item first
        ranks = np.nonzero(gallery_ids[order] == qid)[0] + 1
        first.append(ranks[0])
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
    first = np.array(first)
    out = {f"R{k}": 100.0 * np.mean(first <= k) for k in ks}
    out["mAP"] = 100.0 * np.mean(aps)
    out["mINP"] = 100.0 * np.mean(inps)
    out["mAP_trapezoid"] = 100.0 * np.mean(
        [reference_trapezoid_ap(sim[i], qid, gallery_ids) for i, qid in enumerate(query_ids)]
    )
    return out


def reference_trapezoid_ap(scores, query_id, gallery_ids):
    """The SSAN reference's ``calculate_ap`` (its loop, its names), with our stable tie order."""
    index = np.argsort(-scores, kind="stable")
    good_index = np.argwhere(gallery_ids == query_id)
    mask = np.isin(index, good_index)
    precision_result = np.argwhere(mask).reshape(-1)
    d_recall = 1.0 / len(precision_result)
    ap = 0
    for i in range(len(precision_result)):
        precision = (i + 1) * 1.0 / (precision_result[i] + 1)
        old_precision = i * 1.0 / precision_result[i] if precision_result[i] != 0 else 1.0
        ap = ap + d_recall * (old_precision + precision) / 2
    return ap


def assert_close(ours, reference, tol=1e-9):
    assert set(ours) == set(reference)
    for key in reference:
        assert ours[key] == pytest.approx(reference[key], abs=tol), key


def random_case(rng, num_queries, num_gallery, num_ids, ties=False, dtype=np.float32):
    gallery_ids = rng.integers(0, num_ids, num_gallery)
    query_ids = rng.choice(gallery_ids, num_queries)
    if ties:
        sim = rng.integers(0, 3, (num_queries, num_gallery)).astype(dtype)
    else:
        sim = rng.standard_normal((num_queries, num_gallery)).astype(dtype)
    return sim, query_ids, gallery_ids


# ---------------------------------------------------------------- hand-computed cases
SCORES = [0.9, 0.1, 0.8, 0.3, 0.2]
GALLERY = [1, 2, 1, 2, 1]


def test_several_matches_hand_computed():
    # id 1: order 0(m) 2(m) 3 4(m) 1 -> matches at ranks 1, 2, 4
    got = rank_metrics([SCORES], [1], GALLERY)
    assert got == pytest.approx(
        {
            "R1": 100.0,
            "R5": 100.0,
            "R10": 100.0,
            "mAP": 100 * (1 / 1 + 2 / 2 + 3 / 4) / 3,
            "mINP": 100 * 3 / 4,
            "mAP_trapezoid": 100 * (1 + 1 + (2 / 3 + 3 / 4) / 2) / 3,
        }
    )


def test_match_at_last_rank_hand_computed():
    # id 2: matches 3 (rank 3) and 1 (rank 5, the last position)
    got = rank_metrics([SCORES], [2], GALLERY, ks=(1, 3, 5))
    assert got == pytest.approx(
        {
            "R1": 0.0,
            "R3": 100.0,
            "R5": 100.0,
            "mAP": 100 * (1 / 3 + 2 / 5) / 2,
            "mINP": 100 * 2 / 5,
            "mAP_trapezoid": 100 * ((0 + 1 / 3) / 2 + (1 / 4 + 2 / 5) / 2) / 2,
        }
    )


def test_ties_broken_by_gallery_order_both_ways():
    scores = [[0.5, 0.5, 0.5, 0.2]]
    gallery = [1, 2, 1, 2]
    # id 1: the tied non-match (1) sits between the two matches -> ranks 1 and 3
    assert rank_metrics(scores, [1], gallery, ks=(1, 2)) == pytest.approx(
        {
            "R1": 100.0,
            "R2": 100.0,
            "mAP": 100 * (1 + 2 / 3) / 2,
            "mINP": 100 * 2 / 3,
            "mAP_trapezoid": 100 * (1 + (1 / 2 + 2 / 3) / 2) / 2,
        }
    )
    # id 2: the match (1) is tied with an earlier non-match (0): rank 2, not 1; last match rank 4
    assert rank_metrics(scores, [2], gallery, ks=(1, 2)) == pytest.approx(
        {
            "R1": 0.0,
            "R2": 100.0,
            "mAP": 100 * (1 / 2 + 2 / 4) / 2,
            "mINP": 100 * 2 / 4,
            "mAP_trapezoid": 100 * ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2,
        }
    )


def test_means_over_queries_and_custom_ks():
    got = rank_metrics([SCORES, SCORES], [1, 2], GALLERY, ks=(1, 2, 3))
    ap = ((1 + 1 + 3 / 4) / 3 + (1 / 3 + 2 / 5) / 2) / 2
    trapezoid = ((1 + 1 + (2 / 3 + 3 / 4) / 2) / 3 + ((0 + 1 / 3) / 2 + (1 / 4 + 2 / 5) / 2) / 2) / 2
    assert got == pytest.approx(
        {
            "R1": 50.0,
            "R2": 50.0,
            "R3": 100.0,
            "mAP": 100 * ap,
            "mINP": 100 * (3 / 4 + 2 / 5) / 2,
            "mAP_trapezoid": 100 * trapezoid,
        }
    )


def test_single_perfect_and_single_worst():
    assert rank_metrics([[0.0, 1.0, 0.5]], [7], [3, 7, 3]) == pytest.approx(
        {"R1": 100.0, "R5": 100.0, "R10": 100.0, "mAP": 100.0, "mINP": 100.0, "mAP_trapezoid": 100.0}
    )
    worst = rank_metrics([[0.0, 1.0, 0.5]], [3], [3, 7, 7], ks=(1, 2))
    assert worst == pytest.approx(
        {"R1": 0.0, "R2": 0.0, "mAP": 100 / 3, "mINP": 100 / 3, "mAP_trapezoid": 100 * (0 + 1 / 3) / 2}
    )


# ---------------------------------------------------------------- naive reference
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_agrees_with_naive_reference(seed, ties):
    rng = np.random.default_rng(seed)
    sim, q, g = random_case(rng, 60, int(rng.integers(20, 400)), int(rng.integers(2, 30)), ties=ties)
    assert_close(rank_metrics(sim, q, g), naive_metrics(sim, q, g))


def test_agrees_on_all_equal_scores_and_float64():
    rng = np.random.default_rng(5)
    _, q, g = random_case(rng, 30, 50, 5)
    flat = np.zeros((30, 50))
    assert_close(rank_metrics(flat, q, g), naive_metrics(flat, q, g))
    sim = rng.standard_normal((30, 50))
    assert_close(rank_metrics(sim, q, g), naive_metrics(sim, q, g))


def test_signed_zeros_and_infinities():
    sim = np.array(
        [[0.0, -0.0, np.inf, 1.0, -np.inf, np.inf, -0.0], [-np.inf, -np.inf, 0.0, -0.0, 0.0, np.inf, 2.0]],
        dtype=np.float32,
    )
    g = np.array([1, 2, 1, 2, 1, 2, 1])
    for q in ([1, 2], [2, 1]):
        assert_close(rank_metrics(sim, q, g), naive_metrics(sim, q, g))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 12), st.integers(1, 30), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_property_matches_reference(num_queries, num_gallery, levels, seed):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, num_gallery)
    q = rng.choice(g, num_queries)
    sim = rng.integers(0, levels + 1, (num_queries, num_gallery)).astype(np.float32)
    assert_close(rank_metrics(sim, q, g, chunk_size=int(rng.integers(1, 5))), naive_metrics(sim, q, g))


# ---------------------------------------------------------------- errors
def test_query_without_match_is_named():
    with pytest.raises(ValueError, match=r"query 1 \(id 7\) has no matching gallery item"):
        rank_metrics([[0.1, 0.2], [0.3, 0.4]], [1, 7], [1, 2])
    with pytest.raises(ValueError, match=r"query 5 \(id 9\)"):
        rank_metrics(np.zeros((6, 2)), [1, 1, 1, 1, 1, 9], [1, 2], chunk_size=2)


def test_nan_scores_are_refused():
    sim = np.array([[0.1, 0.2], [np.nan, 0.4]])
    with pytest.raises(ValueError, match="query 1 contains NaN"):
        rank_metrics(sim, [1, 1], [1, 2])
    with pytest.raises(ValueError, match="NaN"):
        RankMetricAccumulator(sort_above=0).process(sim, [1, 1], [1, 2])


def test_bad_shapes_and_types():
    with pytest.raises(ValueError, match="shape"):
        rank_metrics(np.zeros((2, 3)), [1, 2, 3], [1, 2, 3])
    with pytest.raises(ValueError, match="shape"):
        rank_metrics(np.zeros((2, 3)), [1, 2], [1, 2])
    with pytest.raises(TypeError, match="integer"):
        rank_metrics(np.zeros((1, 2)), [1.5], [1, 2])
    with pytest.raises(ValueError, match="ks"):
        rank_metrics(np.zeros((1, 2)), [1], [1, 2], ks=(0,))
    with pytest.raises(ValueError, match="no queries"):
        RankMetricAccumulator().evaluate()


# ---------------------------------------------------------------- chunking and inputs
def test_chunked_equals_unchunked():
    rng = np.random.default_rng(11)
    sim, q, g = random_case(rng, 97, 300, 12, ties=True)
    whole = rank_metrics(sim, q, g)
    for chunk in (1, 2, 7, 50, 97, 1000):
        assert rank_metrics(sim, q, g, chunk_size=chunk) == whole
    for block, workers in ((1, 1), (300, 2), (5000, 3), (10**7, 1)):
        acc = RankMetricAccumulator(block_elements=block, workers=workers)
        acc.process(sim, q, g)
        assert acc.evaluate() == whole


def test_accumulator_protocol():
    rng = np.random.default_rng(3)
    sim, q, g = random_case(rng, 40, 80, 6)
    acc = RankMetricAccumulator(ks=(1, 5))
    for start in range(0, 40, 9):
        acc.process(torch.from_numpy(sim[start : start + 9]), q[start : start + 9], g)
    assert acc.num_queries == 40
    assert_close(acc.evaluate(), naive_metrics(sim, q, g, ks=(1, 5)))
    per_query = acc.per_query()
    assert per_query["num_matches"].tolist() == [int((g == qid).sum()) for qid in q]
    acc.reset()
    other_sim, other_q, other_g = random_case(rng, 10, 30, 3)  # a different gallery after reset
    acc.process(other_sim, other_q, other_g)
    assert_close(acc.evaluate(), naive_metrics(other_sim, other_q, other_g, ks=(1, 5)))


def test_numpy_torch_and_dtypes_agree():
    rng = np.random.default_rng(4)
    sim, q, g = random_case(rng, 25, 60, 5)
    reference = rank_metrics(sim, q, g)
    assert rank_metrics(torch.from_numpy(sim), torch.from_numpy(q), torch.from_numpy(g)) == reference
    assert rank_metrics(sim.astype(np.float64), q.tolist(), g.tolist()) == reference
    half = torch.from_numpy(sim).half()
    assert_close(rank_metrics(half, q, g), naive_metrics(half.float().numpy(), q, g))
    ints = rng.integers(-3, 3, sim.shape)
    assert_close(rank_metrics(ints, q, g), naive_metrics(ints, q, g))
    transposed = np.ascontiguousarray(sim.T).T  # non-contiguous rows
    assert rank_metrics(transposed, q, g) == reference
    read_only = sim.copy()
    read_only.flags.writeable = False
    assert rank_metrics(read_only, q, g) == reference


def test_sort_path_and_torch_path_agree_with_counting():
    rng = np.random.default_rng(8)
    sim, q, g = random_case(rng, 50, 120, 4, ties=True)
    reference = naive_metrics(sim, q, g)
    sorted_acc = RankMetricAccumulator(sort_above=0)
    sorted_acc.process(sim, q, g)
    assert_close(sorted_acc.evaluate(), reference)
    from ssan.evaluation.metrics import _GalleryGroups

    positions, counts = _GalleryGroups(torch.from_numpy(g)).matches(torch.from_numpy(q), 0)
    names = np.arange(len(q))
    counted = _ranking._numpy_block(sim, positions.numpy(), names)
    by_torch = _ranking._torch_block(torch.from_numpy(sim), positions, names).numpy()
    by_sort = _ranking._sorted_block(torch.from_numpy(sim), positions, names).numpy()
    valid = np.arange(positions.shape[1])[None, :] < counts.numpy()[:, None]
    assert (counted[valid] == by_torch[valid]).all() and (counted[valid] == by_sort[valid]).all()


def test_count_true_handles_long_rows():
    rng = np.random.default_rng(2)
    for num_gallery in (1, 7, 2040, 2041, 70000):
        flags = _ranking._byte_buffer(2, 3, num_gallery)
        flags[:, :, :num_gallery] = rng.random((2, 3, num_gallery)) < 0.7
        expected = np.count_nonzero(flags[:, :, :num_gallery], axis=-1)
        assert (_ranking._count_true(flags) == expected).all()


def test_rows_longer_than_a_float32_count_span(cpu_kernel):
    span = 1 << 22
    if cpu_kernel == "numba":
        from ssan.evaluation._rank_kernel import SPAN as span
    rng = np.random.default_rng(6)
    num_gallery = span + 300
    g = np.arange(num_gallery) % (num_gallery // 3)  # about 3 matches per id, spread over the row
    q = np.array([1, num_gallery // 3 - 1])
    sim = rng.integers(0, 50, (2, num_gallery)).astype(np.float32)  # ties on both sides of the span edge
    assert_close(rank_metrics(sim, q, g), naive_metrics(sim, q, g))


def test_kernel_selection(monkeypatch):
    monkeypatch.setattr(_compiled, "_state", dict(_compiled._state))
    with pytest.raises(ValueError, match="must be one of auto, numba, numpy"):
        set_rank_kernel("fortran")
    set_rank_kernel("numpy")
    assert _compiled.kernel() is None and _compiled.kernel_name() == "numpy"


def test_without_numba_falls_back_or_fails_when_asked(monkeypatch):
    monkeypatch.setattr(_compiled, "_state", {"choice": "auto"})
    monkeypatch.setitem(sys.modules, "ssan.evaluation._rank_kernel", None)  # import raises ImportError
    assert _compiled.kernel_name() == "numpy"
    assert rank_metrics([SCORES], [1], GALLERY)["mINP"] == pytest.approx(75.0)
    set_rank_kernel("numba")
    with pytest.raises(RuntimeError, match="Numba is not installed"):
        rank_metrics([SCORES], [1], GALLERY)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(9)
    sim, q, g = random_case(rng, 200, 500, 20, ties=True)
    on_gpu = rank_metrics(torch.from_numpy(sim).cuda(), torch.from_numpy(q).cuda(), torch.from_numpy(g).cuda())
    assert_close(on_gpu, naive_metrics(sim, q, g))
