from __future__ import annotations

import numpy as np
import pytest
import torch

from tasb_ray.errors import ConfigError
from tasb_ray.losses import InBatchMarginMSELoss, MarginMSELoss, TasbLoss, inbatch_margin_mse, margin_mse

B = 5


@pytest.fixture()
def scores() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "s_qp": rng.normal(size=(B, B)), "s_qn": rng.normal(size=(B, B)),
        "t_qp": rng.normal(size=(B, B)) * 3, "t_qn": rng.normal(size=(B, B)) * 3,
        "t_pos": rng.normal(size=B) * 3, "t_neg": rng.normal(size=B) * 3,
    }


def t(x: np.ndarray, grad: bool = False) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64, requires_grad=grad)


def ref_margin_mse(s_pos, s_neg, t_pos, t_neg) -> float:
    return sum(((s_pos[i] - s_neg[i]) - (t_pos[i] - t_neg[i])) ** 2 for i in range(len(s_pos))) / len(s_pos)


def ref_inbatch(s_qp, s_qn, t_qp, t_qn, include_diagonal: bool = False) -> float:
    """Explicit loops: query i's own positive (diagonal of q x pos) against every other triple's passages."""
    halves = []
    for s_other, t_other in ((s_qp, t_qp), (s_qn, t_qn)):
        total, count = 0.0, 0
        for i in range(len(s_qp)):
            for j in range(len(s_qp)):
                if i == j and not include_diagonal:
                    continue
                total += ((s_qp[i, i] - s_other[i, j]) - (t_qp[i, i] - t_other[i, j])) ** 2
                count += 1
        halves.append(total / count)
    return 0.5 * (halves[0] + halves[1])


def test_margin_mse_matches_loops(scores):
    s_pos, s_neg = np.diag(scores["s_qp"]), np.diag(scores["s_qn"])
    expected = ref_margin_mse(s_pos, s_neg, scores["t_pos"], scores["t_neg"])
    got = margin_mse(t(s_pos), t(s_neg), t(scores["t_pos"]), t(scores["t_neg"]))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    assert MarginMSELoss()(t(s_pos), t(s_neg), t(scores["t_pos"]), t(scores["t_neg"])).item() == got.item()


def test_inbatch_matches_loops(scores):
    expected = ref_inbatch(scores["s_qp"], scores["s_qn"], scores["t_qp"], scores["t_qn"])
    got = inbatch_margin_mse(t(scores["s_qp"]), t(scores["s_qn"]), t(scores["t_qp"]), t(scores["t_qn"]))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    module = InBatchMarginMSELoss()(t(scores["s_qp"]), t(scores["s_qn"]), t(scores["t_qp"]), t(scores["t_qn"]))
    assert module.item() == got.item()


def test_wrong_mask_would_be_caught(scores):
    """Including i == j (or averaging over B*B) must give a value the comparison above rejects."""
    got = inbatch_margin_mse(t(scores["s_qp"]), t(scores["s_qn"]), t(scores["t_qp"]), t(scores["t_qn"])).item()
    wrong = ref_inbatch(scores["s_qp"], scores["s_qn"], scores["t_qp"], scores["t_qn"], include_diagonal=True)
    assert got != pytest.approx(wrong, rel=1e-6)


def test_inbatch_uses_own_positive_not_own_negative(scores):
    """Swapping the roles of the two matrices changes the value: the anchor is the q x pos diagonal."""
    a = inbatch_margin_mse(t(scores["s_qp"]), t(scores["s_qn"]), t(scores["t_qp"]), t(scores["t_qn"])).item()
    b = inbatch_margin_mse(t(scores["s_qn"]), t(scores["s_qp"]), t(scores["t_qn"]), t(scores["t_qp"])).item()
    assert a != pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("alpha", [0.75, 0.3, 1.0])
def test_combined_matches_loops(scores, alpha):
    s_pos, s_neg = np.diag(scores["s_qp"]), np.diag(scores["s_qn"])
    pair = ref_margin_mse(s_pos, s_neg, scores["t_pos"], scores["t_neg"])
    inb = ref_inbatch(scores["s_qp"], scores["s_qn"], scores["t_qp"], scores["t_qn"])
    out = TasbLoss(alpha)(t(s_pos), t(s_neg), t(scores["t_pos"]), t(scores["t_neg"]),
                          t(scores["s_qp"]), t(scores["s_qn"]), t(scores["t_qp"]), t(scores["t_qn"]))
    assert out.total.item() == pytest.approx(pair + alpha * inb, rel=1e-12)
    assert out.pairwise.item() == pytest.approx(pair, rel=1e-12)
    assert out.inbatch.item() == pytest.approx(inb, rel=1e-12)


def test_default_alpha_is_075():
    assert TasbLoss().alpha == 0.75


def test_alpha_zero_needs_no_inbatch_teacher(scores):
    s_pos, s_neg = np.diag(scores["s_qp"]), np.diag(scores["s_qn"])
    pair = ref_margin_mse(s_pos, s_neg, scores["t_pos"], scores["t_neg"])
    out = TasbLoss(alpha=0)(t(s_pos), t(s_neg), t(scores["t_pos"]), t(scores["t_neg"]))
    assert out.total.item() == pytest.approx(pair, rel=1e-12)
    assert out.inbatch is None
    # Given anyway, the in-batch value is reported but not added (even a NaN cannot leak into the total).
    nan_teacher = np.full((B, B), np.nan)
    out = TasbLoss(alpha=0)(t(s_pos), t(s_neg), t(scores["t_pos"]), t(scores["t_neg"]),
                            t(scores["s_qp"]), t(scores["s_qn"]), t(nan_teacher), t(nan_teacher))
    assert out.total.item() == pytest.approx(pair, rel=1e-12)


def test_alpha_positive_requires_inbatch_scores(scores):
    x = t(scores["t_pos"])
    with pytest.raises(ValueError, match="in-batch"):
        TasbLoss(0.75)(x, x, x, x)
    with pytest.raises(ValueError, match="all four"):
        TasbLoss(0.75)(x, x, x, x, student_qp=t(scores["s_qp"]))


@pytest.mark.parametrize("alpha", [-0.1, float("nan"), float("inf"), "0.5", True])
def test_bad_alpha_is_a_config_error(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        TasbLoss(alpha)


def test_gradients_reach_student_only(scores):
    s_qp, s_qn = t(scores["s_qp"], grad=True), t(scores["s_qn"], grad=True)
    t_qp, t_qn = t(scores["t_qp"], grad=True), t(scores["t_qn"], grad=True)
    t_pos, t_neg = t(scores["t_pos"], grad=True), t(scores["t_neg"], grad=True)
    out = TasbLoss()(torch.diagonal(s_qp), torch.diagonal(s_qn), t_pos, t_neg, s_qp, s_qn, t_qp, t_qn)
    out.total.backward()
    for student in (s_qp, s_qn):
        assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    for teacher in (t_qp, t_qn, t_pos, t_neg):
        assert teacher.grad is None


def test_gradients_flow_through_an_encoder():
    torch.manual_seed(0)
    enc = torch.nn.Linear(8, 4)
    q, p, n = (enc(torch.randn(B, 8)) for _ in range(3))
    s_qp, s_qn = q @ p.T, q @ n.T
    out = TasbLoss()(torch.diagonal(s_qp), torch.diagonal(s_qn), torch.randn(B), torch.randn(B),
                     s_qp, s_qn, torch.randn(B, B), torch.randn(B, B))
    out.total.backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_batch_of_one_has_no_inbatch_pairs():
    s = torch.ones(1, 1, requires_grad=True)
    loss = inbatch_margin_mse(s, s, torch.zeros(1, 1), torch.zeros(1, 1))
    assert loss.item() == 0.0
    loss.backward()


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        margin_mse(torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError):
        inbatch_margin_mse(torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2), torch.zeros(3, 2))
