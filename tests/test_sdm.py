"""The sdm loss term (IRRA's similarity distribution matching) on hand-computed batches."""

import math

import pytest
import torch

from ssan.errors import ConfigError
from ssan.losses import LOSS_TERMS, LossContext, SSANCriterion, StepInputs, sdm_loss

TAU = 0.02


def _direction_by_hand(sim, labels, tau):
    """mean_i sum_j p_ij (log p_ij - log(q_ij + 1e-8)), written with loops and math."""
    total = 0.0
    for i, row in enumerate(sim):
        exps = [math.exp(s / tau - max(row) / tau) for s in row]
        p = [e / sum(exps) for e in exps]
        same = [1.0 if labels[j] == labels[i] else 0.0 for j in range(len(row))]
        q = [y / sum(same) for y in same]
        total += sum(pj * (math.log(pj) - math.log(qj + 1e-8)) for pj, qj in zip(p, q))
    return total / len(sim)


def _batch():
    """Identity 0 has two images (rows 0, 1), identity 1 one (row 2)."""
    image = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    text = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 2.0]], dtype=torch.float64)
    return image, text, torch.tensor([0, 0, 1])


def test_sdm_equals_the_formula_by_hand():
    image, text, labels = _batch()
    sim = torch.nn.functional.normalize(image, dim=1) @ torch.nn.functional.normalize(text, dim=1).T
    # cosines by hand: rows are images, columns texts
    assert sim.flatten().tolist() == pytest.approx([1.0, 0.8, 0.0, 0.6, 0.96, 0.8, 0.0, 0.6, 1.0])
    rows = sim.tolist()
    columns = sim.T.tolist()
    want = _direction_by_hand(rows, [0, 0, 1], TAU) + _direction_by_hand(columns, [0, 0, 1], TAU)
    assert float(sdm_loss(sim, labels, TAU)) == pytest.approx(want, rel=1e-9)


def test_sdm_gradient_matches_the_closed_form():
    """d/ds_ij of sum_j p_ij log(p_ij / q_ij) is p_ij (log p_ij - log q_ij - KL_i) / tau."""
    image, text, labels = _batch()
    sim = (torch.nn.functional.normalize(image, dim=1) @ torch.nn.functional.normalize(text, dim=1).T).detach()
    sim.requires_grad_(True)
    sdm_loss(sim, labels, TAU).backward()
    same = (labels[:, None] == labels[None, :]).double()
    log_q = torch.log(same / same.sum(1, keepdim=True) + 1e-8)

    def closed(s):
        log_p = (s / TAU).log_softmax(1)
        p = log_p.exp()
        kl = (p * (log_p - log_q)).sum(1, keepdim=True)
        return p * (log_p - log_q - kl) / TAU / s.size(0)

    want = closed(sim.detach()) + closed(sim.detach().T).T
    assert torch.allclose(sim.grad, want, atol=1e-10)
    assert torch.autograd.gradcheck(lambda s: sdm_loss(s, labels, TAU), (sim.detach().clone().requires_grad_(),))


def test_sdm_is_zero_for_a_perfect_match_only_in_the_limit():
    """Orthogonal identities, one image each: the loss falls towards 0 as the temperature falls."""
    sim = torch.eye(3, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    assert float(sdm_loss(sim, labels, 0.02)) < 1e-9
    assert float(sdm_loss(sim, labels, 1.0)) > 0.5


def test_sdm_is_a_registered_term_on_global_features_only():
    assert "sdm" in LOSS_TERMS
    context = LossContext(num_classes=2, num_parts=2, embed_dim=4)
    criterion = SSANCriterion(context, terms={"sdm": 1.0}, options={"sdm": {"tau": 0.05}})
    generator = torch.Generator().manual_seed(0)
    feats = {
        "global": torch.randn(4, 4, generator=generator),
        "parts": torch.randn(4, 2, 4, generator=generator),
        "relation": torch.randn(4, 2, 2, generator=generator),
    }
    text = {key: value + 0.1 for key, value in feats.items()}
    labels = torch.tensor([0, 0, 1, 1])
    out = criterion({"image": feats, "text": text}, {"label": labels}, StepInputs())
    assert set(out) == {"sdm_global", "total"}
    want = sdm_loss(
        torch.nn.functional.normalize(feats["global"]) @ torch.nn.functional.normalize(text["global"]).T, labels, 0.05
    )
    assert float(out["total"]) == pytest.approx(float(want), rel=1e-6)


def test_sdm_refuses_a_bad_temperature():
    with pytest.raises(ConfigError, match="tau must be a positive number"):
        SSANCriterion(LossContext(2, 2, 4), terms={"sdm": 1.0}, options={"sdm": {"tau": 0}})
