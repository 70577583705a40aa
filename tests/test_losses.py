"""Tests for ssan.losses: compound ranking on toy matrices, identity loss, InfoNCE, criterion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssan.errors import ConfigError
from ssan.losses import (
    LOSS_TERMS,
    IdentityLoss,
    LossContext,
    LossTerm,
    SSANCriterion,
    StepInputs,
    bidirectional_hinge,
    compound_ranking_loss,
    multi_positive_info_nce,
    register_loss_term,
    semi_hard_hinge,
    weak_margins,
)
from ssan.models import SSAN

# Rows: image anchors, columns: texts; labels all different.
#   row 0: positive 0.9; 0.8 is semi-hard (in (0.7, 0.9)), 0.5 is too easy        -> 0.2 - 0.9 + 0.8 = 0.10
#   row 1: positive 0.6; 0.3 too easy, 0.7 harder than the positive               -> nothing
#   row 2: positive 0.5; 0.1 too easy, 0.45 semi-hard                             -> 0.2 - 0.5 + 0.45 = 0.15
#   col 0: positive 0.9; 0.3, 0.1 too easy -> nothing; col 1: positive 0.6; 0.8 hard, 0.45 semi-hard -> 0.05
#   col 2: positive 0.5; 0.5 equals the positive (not semi-hard), 0.7 hard -> nothing
TOY = torch.tensor([[0.9, 0.8, 0.5], [0.3, 0.6, 0.7], [0.1, 0.45, 0.5]])
LABELS = torch.tensor([0, 1, 2])


def test_semi_hard_selection_on_a_toy_matrix():
    assert semi_hard_hinge(TOY, LABELS, 0.2).item() == pytest.approx(0.25)
    assert semi_hard_hinge(TOY.T, LABELS, 0.2).item() == pytest.approx(0.05)
    assert bidirectional_hinge(TOY, LABELS, 0.2).item() == pytest.approx(0.30)


def test_same_identity_non_pairs_are_not_negatives():
    labels = torch.tensor([0, 0, 2])  # row 0's only semi-hard negative (column 1) shares its identity
    assert semi_hard_hinge(TOY, labels, 0.2).item() == pytest.approx(0.15)
    assert semi_hard_hinge(TOY.T, labels, 0.2).item() == pytest.approx(0.05)


def test_anchors_without_semi_hard_negatives_contribute_nothing():
    easy = torch.tensor([[0.9, 0.1], [0.2, 0.8]])  # the fallback triplet is easy too: hinge 0
    sim = easy.clone().requires_grad_(True)
    loss = bidirectional_hinge(sim, torch.tensor([0, 1]), 0.2)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(sim.grad) == 0


# No anchor has a semi-hard negative in either direction (every negative is hard or easy):
#   rows: r0 pos 0.5 (0.9, 0.9 hard); r1 pos 0.4 (0.8, 0.95 hard); r2 pos 0.2 (0.7, 0.6 hard)
#   columns: c0 pos 0.5 (0.8, 0.7 hard); c1 pos 0.4 (0.9, 0.6 hard); c2 pos 0.2 (0.9, 0.95 hard)
# The reference's fallback: last anchor (2), its positive, its first other-identity candidate.
ALL_HARD = torch.tensor([[0.5, 0.9, 0.9], [0.8, 0.4, 0.95], [0.7, 0.6, 0.2]])


def test_fallback_triplet_when_no_anchor_has_a_semi_hard_negative():
    sim = ALL_HARD.clone().requires_grad_(True)
    rows = semi_hard_hinge(sim, LABELS, 0.2)
    assert rows.item() == pytest.approx(0.2 - 0.2 + 0.7)  # anchor 2 against column 0
    assert semi_hard_hinge(ALL_HARD.T, LABELS, 0.2).item() == pytest.approx(0.2 - 0.2 + 0.9)  # column 2 vs row 0
    assert bidirectional_hinge(ALL_HARD, LABELS, 0.2).item() == pytest.approx(1.6)
    rows.backward()
    expected = torch.zeros(3, 3)
    expected[2, 2], expected[2, 0] = -1.0, 1.0
    assert torch.equal(sim.grad, expected)


def test_fallback_negative_is_the_first_other_identity_in_batch_order():
    assert semi_hard_hinge(ALL_HARD, torch.tensor([0, 0, 2]), 0.2).item() == pytest.approx(0.7)
    assert semi_hard_hinge(ALL_HARD, torch.tensor([2, 0, 2]), 0.2).item() == pytest.approx(0.6)  # column 1
    assert semi_hard_hinge(ALL_HARD, torch.tensor([1, 1, 1]), 0.2).item() == 0.0  # no other identity at all


def test_fallback_uses_the_last_anchor_margin_and_the_last_examined_identity():
    margins = torch.tensor([0.2, 0.2, 0.5])
    assert semi_hard_hinge(ALL_HARD, LABELS, margins).item() == pytest.approx(0.5 - 0.2 + 0.7)
    # With anchors 1 and 2 skipped, the reference's loop last examined anchor 0 (identity 0), so the
    # negative is the first candidate of another identity than 0: column 1.
    active = torch.tensor([True, False, False])
    assert semi_hard_hinge(ALL_HARD, LABELS, margins, active).item() == pytest.approx(0.5 - 0.2 + 0.6)
    assert semi_hard_hinge(ALL_HARD, LABELS, margins, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_no_fallback_when_one_anchor_has_a_semi_hard_negative():
    sim = ALL_HARD.clone()
    sim[0, 1] = 0.45  # row 0 now has a semi-hard negative: only its hinge counts
    assert semi_hard_hinge(sim, LABELS, 0.2).item() == pytest.approx(0.2 - 0.5 + 0.45)


def test_one_negative_drawn_uniformly_among_semi_hard_ones():
    sim = torch.tensor([[0.9, 0.85, 0.75, 0.1], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    labels = torch.arange(4)
    seen = []
    for seed in range(200):
        gen = torch.Generator().manual_seed(seed)
        seen.append(round(semi_hard_hinge(sim, labels, 0.2, generator=gen).item(), 4))
    assert set(seen) == {0.15, 0.05}  # 0.2 - 0.9 + 0.85 or 0.2 - 0.9 + 0.75, never both
    assert 60 < seen.count(0.15) < 140
    same = [semi_hard_hinge(sim, labels, 0.2, generator=torch.Generator().manual_seed(7)).item() for _ in range(2)]
    assert same[0] == same[1]


def test_weak_margin_schedule_and_skip_rule():
    sim = torch.diag(torch.tensor([0.8, 0.5, 0.4]))
    weak = torch.diag(torch.tensor([0.4, 0.6, -0.1]))
    margins, active = weak_margins(sim, weak, 0.2, epoch=4, warmup_epochs=5, skip=0.16)
    torch.testing.assert_close(margins, torch.full((3,), 0.1))
    assert active.all()
    margins, active = weak_margins(sim, weak, 0.2, epoch=5, warmup_epochs=5, skip=0.16)
    # mu = [0.5, min(1.2, 1) = 1, 0.25] -> margins (mu + 1) * 0.1
    torch.testing.assert_close(margins, torch.tensor([0.15, 0.2, 0.125]))
    assert active.tolist() == [False, True, False]


def test_compound_loss_before_and_after_warmup():
    labels = torch.arange(3)
    strong = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.5, 0.1], [0.1, 0.1, 0.4]])
    # weak matrix: row 0 (positive 0.4) has negatives 0.32 and 0.26, row 1 (positive 0.6) has 0.45
    weak = torch.tensor([[0.4, 0.32, 0.0], [0.0, 0.6, 0.45], [0.26, 0.0, 0.3]])
    early = compound_ranking_loss(strong, weak, labels, epoch=0)
    # margin 0.1: row 0: 0.32 in (0.3, 0.4) -> 0.02; row 1: 0.45 not in (0.5, 0.6); row 2: 0.26 in (0.2, 0.3) -> 0.06
    # columns: col 0: 0.26 vs 0.4 -> no; col 1: 0.32 vs 0.6 -> no; col 2: 0.45 > 0.3 hard -> no
    assert early["strong"].item() == pytest.approx(0.0)
    assert early["weak"].item() == pytest.approx(0.08)
    assert early["loss"].item() == pytest.approx(0.1 * 0.08)
    late = compound_ranking_loss(strong, weak, labels, epoch=5)
    # mu = [0.5, 1, 0.75] -> margins [0.15, 0.2, 0.175]; pair 0 skipped (0.15 < 0.16)
    # row 1: 0.45 in (0.4, 0.6) -> 0.2 - 0.6 + 0.45 = 0.05; row 2: 0.26 in (0.125, 0.3) -> 0.175 - 0.3 + 0.26 = 0.135
    # col 1 (margin 0.2): 0.32 in (0.4, 0.6)? no; col 2 (margin 0.175): 0.45 hard -> no
    assert late["weak"].item() == pytest.approx(0.185)
    assert late["loss"].item() == pytest.approx(0.0185)


def test_identity_loss_equals_per_part_cross_entropy():
    torch.manual_seed(0)
    loss = IdentityLoss(num_classes=5, in_dim=4, num_parts=3)
    torch.nn.init.normal_(loss.weight)
    image, text, labels = torch.randn(6, 3, 4), torch.randn(6, 3, 4), torch.randint(0, 5, (6,))
    expected = (
        sum(
            F.cross_entropy(image[:, k] @ loss.weight[k].T + loss.bias[k], labels)
            + F.cross_entropy(text[:, k] @ loss.weight[k].T + loss.bias[k], labels)
            for k in range(3)
        )
        / 3
    )
    torch.testing.assert_close(loss(image, text, labels), expected)
    assert abs(IdentityLoss(100, 64).weight.std().item() - 0.001) < 0.0002


def test_info_nce_matches_a_direct_computation():
    sim = torch.tensor([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3], [0.5, 0.3, 0.7]])
    labels = torch.tensor([0, 1, 0])
    logp_rows, logp_cols = (sim / 0.1).log_softmax(1), (sim / 0.1).log_softmax(0)
    rows = -(logp_rows[0, [0, 2]].mean() + logp_rows[1, 1] + logp_rows[2, [0, 2]].mean()) / 3
    cols = -(logp_cols[[0, 2], 0].mean() + logp_cols[1, 1] + logp_cols[[0, 2], 2].mean()) / 3
    torch.testing.assert_close(multi_positive_info_nce(sim, labels, 0.1), (rows + cols) / 2)


SMALL = dict(num_parts=4, embed_dim=16, word_dim=8, hidden_dim=12, backbone="small", cnn_width=8)


def batch_features(model: SSAN, batch: int = 6, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 7, (batch,), generator=gen)
    tokens = torch.randint(1, 30, (batch, 6), generator=gen) * (torch.arange(6)[None] < lengths[:, None])
    out = model(
        {
            "image": torch.randn(batch, 3, 32, 16, generator=gen),
            "tokens": tokens,
            "lengths": lengths,
            "weak_tokens": tokens.flip(0),
            "weak_lengths": lengths.flip(0),
        }
    )
    return out, torch.tensor([0, 1, 2, 0, 1, 2])[:batch]


def criterion_for(parts: bool = True, **fields) -> SSANCriterion:
    return SSANCriterion(LossContext(num_classes=3, num_parts=4, embed_dim=16, parts=parts), **fields)


def test_every_trainable_parameter_receives_a_gradient():
    torch.manual_seed(0)
    model = SSAN(30, **SMALL).train()
    criterion = criterion_for(terms={"id": 1.0, "cr": 1.0, "nce": 0.5})
    out, labels = batch_features(model)
    terms = criterion(out, {"label": labels}, StepInputs(epoch=0))
    terms["total"].backward()
    params = list(model.named_parameters()) + list(criterion.named_parameters())
    missing = [name for name, p in params if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing


def test_criterion_terms_and_weights():
    torch.manual_seed(0)
    model = SSAN(30, **SMALL)
    criterion = criterion_for(part_weight=0.5, terms={"id": 2.0, "cr": 1.0})
    out, labels = batch_features(model)
    terms = criterion(out, {"label": labels}, StepInputs(epoch=6, generator=torch.Generator().manual_seed(1)))
    assert set(terms) == {"total", "id_global", "cr_global", "id_parts", "cr_parts", "id_relation", "cr_relation"}
    expected = (
        2.0 * (terms["id_global"] + 0.5 * (terms["id_parts"] + terms["id_relation"]))
        + terms["cr_global"]
        + 0.5 * (terms["cr_parts"] + terms["cr_relation"])
    )
    torch.testing.assert_close(terms["total"], expected)
    again = criterion(out, {"label": labels}, StepInputs(epoch=6, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(again["total"], terms["total"])
    with_nce = criterion_for(terms={"id": 1.0, "cr": 1.0, "nce": 1.0})(out, {"label": labels})
    assert {"nce_global", "nce_parts", "nce_relation"} <= set(with_nce)


def test_global_only_criterion_trains_the_ablation():
    torch.manual_seed(0)
    model = SSAN(30, **{**SMALL, "parts": False})
    criterion = criterion_for(parts=False)
    assert len(list(criterion.parameters())) == 2
    out, labels = batch_features(model)
    terms = criterion(out, {"label": labels}, StepInputs(epoch=0))
    assert set(terms) == {"total", "id_global", "cr_global"}
    terms["total"].backward()
    assert all(p.grad is not None for p in model.parameters())


class PlainTriplet(LossTerm):
    """A term written from user code: image-to-text triplet with the hardest negative."""

    def __init__(self, context, margin=0.3):
        super().__init__(context)
        self.margin = margin

    def forward(self, outputs, batch, step):
        from ssan.losses import cosine_matrix

        sim = cosine_matrix(outputs["image"]["global"], outputs["text"]["global"])
        labels = batch["label"]
        negatives = sim.masked_fill(labels[:, None] == labels[None, :], -2.0).amax(dim=1)
        return {"global": (self.margin - sim.diagonal() + negatives).clamp_min(0).mean()}


def test_a_registered_term_is_one_class_plus_one_line_of_config():
    register_loss_term("plain-triplet")(PlainTriplet)
    try:
        torch.manual_seed(0)
        out, labels = batch_features(SSAN(30, **SMALL))
        criterion = criterion_for(
            terms={"id": 1.0, "cr": 1.0, "plain-triplet": 2.0}, options={"plain-triplet": {"margin": 0.5}}
        )
        terms = criterion(out, {"label": labels})
        assert criterion.terms["plain-triplet"].margin == 0.5 and "plain-triplet_global" in terms
        method = sum(
            w * (terms[f"{t}_global"] + 0.5 * (terms[f"{t}_parts"] + terms[f"{t}_relation"]))
            for t, w in (("id", 1.0), ("cr", 1.0))
        )
        torch.testing.assert_close(terms["total"], method + 2.0 * terms["plain-triplet_global"])
        with pytest.raises(ConfigError, match="unexpected keyword"):
            criterion_for(terms={"plain-triplet": 1.0}, options={"plain-triplet": {"margn": 0.5}})
    finally:
        LOSS_TERMS.unregister("plain-triplet")
    with pytest.raises(ConfigError, match="unknown loss term 'plain-triplet'; valid: ") as info:
        criterion_for(terms={"plain-triplet": 1.0})
    assert sorted(str(info.value).split("valid: ")[1].split(", ")) == ["cr", "id", "nce", "sdm"]
    with pytest.raises(ConfigError, match="not in loss.terms"):
        criterion_for(options={"nce": {"temperature": 0.1}})
