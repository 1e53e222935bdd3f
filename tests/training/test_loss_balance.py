"""The in-batch teacher's scale (teachers.inbatch_scale) and the loss-balance metrics the trainer logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tasb_ray.config import from_dict
from tasb_ray.errors import ConfigError
from tasb_ray.teachers.ensemble import znorm_rows
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.loss_balance import (
    ScaledInBatchTeacher,
    calibration_batches,
    inbatch_margins,
    pair_margins,
    spread,
)
from tasb_ray.training.trainer import Trainer
from tests.training.test_trainer import OverlapTeacher, _cfg, _data


class Constant:
    def __init__(self, matrix):
        self.matrix = np.asarray(matrix, dtype=float)

    def score_matrix(self, qids, queries, pids, passages):
        return self.matrix


class FakeEnsemble:
    """An ensemble's shape: members, weights, and its own (per-row z-normalised) score_matrix."""

    def __init__(self, members, weights):
        self.components, self.weights = members, weights

    def score_matrix(self, *args):
        return sum(w * znorm_rows(m.score_matrix(*args)) for m, w in zip(self.components, self.weights))


def test_inbatch_margins_hand_example():
    # B = 2: columns [p0+, p1+, p0-, p1-]; margins are own positive minus the other triple's passages.
    t = np.array([[5.0, 1.0, 4.0, 2.0],
                  [0.0, 3.0, 1.0, 2.5]])
    np.testing.assert_allclose(sorted(inbatch_margins(t)), sorted([5 - 1, 3 - 0, 5 - 2, 3 - 1]))
    assert spread(inbatch_margins(t)) == (pytest.approx(3.0), pytest.approx(np.std([4, 3, 3, 2])))
    np.testing.assert_allclose(pair_margins([3, 1], [1, 2]), [2, -1])
    assert len(inbatch_margins(np.ones((1, 2)))) == 0 and spread(np.zeros(0)) == (0.0, 0.0)


def test_raw_and_zscore_modes():
    a = Constant([[10.0, 20.0, 30.0, 0.0], [1.0, 2.0, 3.0, 4.0]])
    b = Constant([[0.1, 0.5, 0.2, 0.3], [0.9, 0.1, 0.4, 0.2]])
    ens = FakeEnsemble([a, b], [1.0, 2.0])
    args = (["q0", "q1"], ["x", "y"], list("abcd"), list("abcd"))
    np.testing.assert_allclose(ScaledInBatchTeacher(ens, "raw").score_matrix(*args), a.matrix + 2 * b.matrix)
    np.testing.assert_allclose(ScaledInBatchTeacher(ens, "zscore").score_matrix(*args), ens.score_matrix(*args))
    np.testing.assert_allclose(ScaledInBatchTeacher(a, "zscore").score_matrix(*args), znorm_rows(a.matrix))
    np.testing.assert_allclose(ScaledInBatchTeacher(a, "raw").score_matrix(*args), a.matrix)
    with pytest.raises(ValueError):
        ScaledInBatchTeacher(a, "loud")


def test_match_pairwise_matches_the_spreads_and_ignores_the_run_sampling():
    data = _data(n_queries=16)
    calib = lambda: (calibration_batches(data.pairs, 4), data.batch_texts)
    scaled = ScaledInBatchTeacher(OverlapTeacher(), "match-pairwise", calib)
    assert scaled.factor is None
    factor = scaled.calibrate()
    batches, _ = calib()
    pair, inb = [], []
    for batch in batches:
        pids = batch.pos_pids + batch.neg_pids
        pair.append(pair_margins(batch.pos_scores, batch.neg_scores))
        inb.append(inbatch_margins(scaled.score_matrix(batch.qids, [data.query_text[q] for q in batch.qids], pids,
                                                       [data.passage_text[p] for p in pids])))
    # After scaling, the in-batch margins' sd equals the pairwise margins' sd on the calibration sample.
    assert spread(np.concatenate(inb))[1] == pytest.approx(spread(np.concatenate(pair))[1], rel=1e-9)
    assert factor != pytest.approx(1.0) and scaled.calibration_stats["factor"] == factor
    assert ScaledInBatchTeacher(OverlapTeacher(), "match-pairwise", calib).calibrate() == factor
    # Degenerate teacher (constant scores): nothing to match, factor 1.
    flat = ScaledInBatchTeacher(Constant(np.zeros((4, 8))), "match-pairwise", calib)
    assert flat.calibrate() == 1.0


def _calibration_losses(scaled, data, student):
    """L_pair and L_inb (the losses' own definitions, on margins) of the calibration sample with the scaled teacher."""
    batches, _, _ = calibration_batches(data.pairs, 4), None, None
    lp, li = [], []
    for batch in batches:
        pids = batch.pos_pids + batch.neg_pids
        t = scaled.score_matrix(batch.qids, [data.query_text[q] for q in batch.qids], pids,
                                [data.passage_text[p] for p in pids])
        s = student(batch)
        b = len(batch)
        lp.append((np.diagonal(s[:, :b]) - np.diagonal(s[:, b:])) - pair_margins(batch.pos_scores, batch.neg_scores))
        li.append(inbatch_margins(s) - inbatch_margins(t))
    return float(np.mean(np.concatenate(lp) ** 2)), float(np.mean(np.concatenate(li) ** 2))


def test_match_loss_balances_the_weighted_terms_at_the_reference_alpha():
    data = _data(n_queries=16)
    calib = lambda: (calibration_batches(data.pairs, 4), data.batch_texts)
    teacher = OverlapTeacher()

    def student(batch, scale=0.5):  # a fixed "student": the teacher's own z-scores, shrunk and shifted by passage
        pids = batch.pos_pids + batch.neg_pids
        m = znorm_rows(teacher.score_matrix(batch.qids, [data.query_text[q] for q in batch.qids], pids,
                                            [data.passage_text[p] for p in pids]))
        return scale * m + 0.1 * np.arange(m.shape[1])[None, :]

    scaled = ScaledInBatchTeacher(teacher, "match-loss", calib, student=student)
    factor = scaled.calibrate()
    loss_pair, loss_inb = _calibration_losses(scaled, data, student)
    assert 0.75 * loss_inb == pytest.approx(loss_pair, rel=1e-9)
    assert scaled.calibration_stats["loss_inbatch"] == pytest.approx(loss_inb, rel=1e-9)
    assert factor > 0 and factor != pytest.approx(1.0)
    # A student with the teacher's pairwise margins (L_pair = 0) and noise elsewhere: no scale reaches
    # 0.75 * L_inb = 0, so the factor is the one that makes L_inb smallest.
    def exact_pairs(batch):
        b = len(batch)
        rng = np.random.default_rng(sum(int(q[1:]) for q in batch.qids))
        s = 3.0 * rng.normal(size=(b, 2 * b))
        s[np.arange(b), np.arange(b)] = batch.pos_scores
        s[np.arange(b), b + np.arange(b)] = batch.neg_scores
        return s

    best = ScaledInBatchTeacher(teacher, "match-loss", calib, student=exact_pairs)
    c = best.calibrate()
    assert _calibration_losses(best, data, exact_pairs)[0] == pytest.approx(0.0, abs=1e-12)
    at_c = _calibration_losses(best, data, exact_pairs)[1]
    for other in (0.9 * c, 1.1 * c):
        best.factor = other
        assert _calibration_losses(best, data, exact_pairs)[1] > at_c


def test_config_field_is_checked():
    assert from_dict(TrainingConfig, {}).teachers.inbatch_scale == "match-loss"
    assert from_dict(TrainingConfig, {"teachers": {"inbatch_scale": "zscore"}}).teachers.inbatch_scale == "zscore"
    with pytest.raises(ConfigError, match=r"teachers\.inbatch_scale must be one of"):
        from_dict(TrainingConfig, {"teachers": {"inbatch_scale": "z"}})


class Recorder:
    def __init__(self):
        self.logs, self.evals = [], []

    def on_log(self, step, metrics):
        self.logs.append((step, metrics))

    def on_eval(self, step, split, metrics):
        self.evals.append((step, split, metrics))

    def on_checkpoint(self, step, path): ...


@pytest.mark.parametrize("scale", ["zscore", "match-pairwise", "match-loss"])
def test_trainer_logs_the_balance_and_reports_the_plan(tiny_model, tmp_path, scale):
    data = _data()
    rec = Recorder()
    cfg = _cfg(tiny_model, teachers={"inbatch_scale": scale}, optim={"max_steps": 2})
    trainer = Trainer(cfg, data, tmp_path / "r", OverlapTeacher(), reporters=[rec])
    trainer.fit()
    hist = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for entry in hist:
        assert entry["loss_ratio"] == pytest.approx(0.75 * entry["loss_inbatch"] / entry["loss_pair"])
        assert entry["margin_sd_pair"] > 0 and entry["margin_sd_inbatch"] > 0
        assert entry["inbatch_scale_factor"] == trainer.teacher.factor
    assert (trainer.teacher.factor == 1.0) == (scale == "zscore")
    assert [m["loss_ratio"] for _, m in rec.logs] == [e["loss_ratio"] for e in hist]
    plan = [(step, m) for step, split, m in rec.evals if split == "plan"]
    assert len(plan) == 1 and plan[0][0] == 0
    assert plan[0][1]["single_cluster_batch_share"] == trainer.plan_stats["single_cluster_batch_share"]
    assert trainer.plan_stats["batches"] == 2


def test_first_step_ratio_is_the_start_of_training(tiny_model, tmp_path):
    # The in-batch factor scales L_inb by factor^2 at initial weights only approximately (the student is not 0),
    # but the ratio must move with the scale: the zscore and match-pairwise runs differ exactly in the teacher.
    data = _data()
    ratios = {}
    for scale in ("zscore", "match-pairwise"):
        cfg = _cfg(tiny_model, teachers={"inbatch_scale": scale}, optim={"max_steps": 1})
        trainer = Trainer(cfg, data, tmp_path / scale, OverlapTeacher())
        trainer.fit()
        ratios[scale] = (trainer.history[0]["loss_ratio"], trainer.history[0]["loss_pair"], trainer.teacher.factor)
    assert ratios["zscore"][1] == ratios["match-pairwise"][1]  # same plan, same student, same pairwise term
    assert ratios["zscore"][0] != ratios["match-pairwise"][0]
