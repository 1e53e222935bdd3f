"""Trainer: resume equals an uninterrupted run, same seed same run, dev evaluation picks the best model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tasb_ray.config import from_dict
from tasb_ray.errors import TasbRayError
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import EvalData, TrainData, Trainer


class OverlapTeacher:
    """Word-overlap scores: cheap, deterministic, good enough to supervise a tiny model."""

    def score_matrix(self, qids, queries, pids, passages):
        q = [set(t.lower().split()) for t in queries]
        p = [set(t.lower().split()) for t in passages]
        return np.array([[len(a & b) / (1 + len(a)) for b in p] for a in q], dtype=np.float32)


def _data(n_queries=12, n_docs=30, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    passages = {f"d{i}": " ".join(rng.choice(words, 12)) for i in range(n_docs)}
    queries = {f"q{i}": " ".join(rng.choice(words, 4)) for i in range(n_queries)}
    rows = []
    teacher = OverlapTeacher()
    for q, text in queries.items():
        pos = f"d{int(rng.integers(n_docs))}"
        for neg in rng.choice(list(passages), 5, replace=False):
            if neg != pos:
                s = teacher.score_matrix([q], [text], [pos, neg], [passages[pos], passages[neg]])[0]
                rows.append((q, pos, neg, float(s[0]) * 5, float(s[1]) * 5))
    pairs = pd.DataFrame(rows, columns=["qid", "pos_pid", "neg_pid", "pos_score", "neg_score"])
    clusters = pd.DataFrame({"qid": list(queries), "cluster": [i % 3 for i in range(n_queries)]})
    return TrainData(pairs, queries, passages, clusters)


def _cfg(tiny_model, **over):
    base = {"seed": 1, "alpha": 0.75, "progress": False, "checkpoint_every": 2, "log_every": 1,
            "student": {"model": str(tiny_model), "query_max_len": 16, "passage_max_len": 32,
                        "attention_dropout": 0.1},
            "sampler": {"sampling": "tas-balanced", "batch_size": 4},
            "optim": {"lr": 1e-3, "max_steps": 6, "warmup_steps": 1}}
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return from_dict(TrainingConfig, base)


def _weights(path):
    return load_file(str(path / "model" / "model.safetensors"))


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_log(self, step, metrics): ...

    def on_eval(self, step, split, metrics): ...

    def on_checkpoint(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt(f"injected stop at step {step}")


def test_resume_continues_exactly(tiny_model, tmp_path):
    data = _data()
    full = Trainer(_cfg(tiny_model), data, tmp_path / "full", OverlapTeacher()).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tiny_model), data, tmp_path / "cut", OverlapTeacher(), reporters=[StopAt(4)]).fit()
    state = json.loads((tmp_path / "cut" / "checkpoint" / "trainer_state.json").read_text())
    assert state["step"] == 4 and not (tmp_path / "cut" / "model").exists()
    resumed = Trainer(_cfg(tiny_model), data, tmp_path / "cut", OverlapTeacher()).fit()
    assert resumed.plan_hash == full.plan_hash
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    full_losses = [e["loss"] for e in full.history if e["split"] == "train"]
    hist = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in hist] == list(range(1, 7))  # no step logged twice after the resume
    np.testing.assert_allclose([e["loss"] for e in hist], full_losses, rtol=1e-5)


def test_same_seed_same_run_other_seed_differs(tiny_model, tmp_path):
    data = _data()
    r1 = Trainer(_cfg(tiny_model, optim={"max_steps": 3}), data, tmp_path / "a", OverlapTeacher()).fit()
    r2 = Trainer(_cfg(tiny_model, optim={"max_steps": 3}), data, tmp_path / "b", OverlapTeacher()).fit()
    r3 = Trainer(_cfg(tiny_model, seed=2, optim={"max_steps": 3}), data, tmp_path / "c", OverlapTeacher()).fit()
    assert r1.plan_hash == r2.plan_hash != r3.plan_hash
    assert [e["loss"] for e in r1.history] == [e["loss"] for e in r2.history]


def test_checkpoint_from_other_config_is_refused(tiny_model, tmp_path):
    data = _data()
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tiny_model), data, tmp_path / "x", OverlapTeacher(), reporters=[StopAt(2)]).fit()
    with pytest.raises(TasbRayError, match="different 'alpha'"):
        Trainer(_cfg(tiny_model, alpha=0.5), data, tmp_path / "x", OverlapTeacher()).fit()


def test_loss_goes_down_and_alpha_zero_needs_no_teacher(tiny_model, tmp_path):
    data = _data(n_queries=8)
    cfg = _cfg(tiny_model, alpha=0.0, log_every=5,
               sampler={"sampling": "random", "batch_size": 8}, optim={"max_steps": 40, "lr": 5e-4})
    result = Trainer(cfg, data, tmp_path / "r").fit()
    losses = [e["loss"] for e in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert all(e["loss_inbatch"] == 0 for e in result.history)


def test_dev_evaluation_keeps_best(tiny_model, tmp_path):
    data = _data()
    corpus = pd.DataFrame({"doc_id": list(data.passage_text), "text": list(data.passage_text.values())})
    queries = pd.DataFrame({"query_id": list(data.query_text)[:4], "text": list(data.query_text.values())[:4]})
    qrels = data.pairs.drop_duplicates("qid").rename(columns={"qid": "query_id", "pos_pid": "doc_id"})
    qrels = qrels[qrels.query_id.isin(queries.query_id)][["query_id", "doc_id"]].assign(relevance=1)
    cfg = _cfg(tiny_model, eval={"every": 2, "k": 10, "at_start": True})
    result = Trainer(cfg, data, tmp_path / "e", OverlapTeacher(), dev=EvalData("dev", corpus, queries, qrels)).fit()
    evals = [e for e in result.history if e["split"] == "dev"]
    assert [e["step"] for e in evals] == [0, 2, 4, 6]
    best = json.loads((tmp_path / "e" / "best" / "best.json").read_text())
    assert best["nDCG@10"] == max(e["nDCG@10"] for e in evals) == result.best_metric
    assert best["step"] == result.best_step


def test_reinit_top_layers_same_start_for_every_arm_of_a_seed(tiny_model, tmp_path):
    data = _data()

    def start(**over):
        t = Trainer(_cfg(tiny_model, **over), data, tmp_path / "x", OverlapTeacher())
        return {k: v.detach().clone() for k, v in t.student.bert.state_dict().items()}

    tas = start(student={"reinit_top_layers": 1})
    rnd = start(student={"reinit_top_layers": 1}, sampler={"sampling": "random", "batch_size": 4}, alpha=0.5)
    assert all(torch.equal(v, rnd[k]) for k, v in tas.items())
    other_seed = start(student={"reinit_top_layers": 1}, seed=2)
    plain = start()
    changed = {k for k, v in tas.items() if not torch.equal(v, plain[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)  # the tiny BERT has 2 layers
    assert any(not torch.equal(v, other_seed[k]) for k, v in tas.items() if k in changed)


def test_checkpoint_from_before_a_new_field_resumes_when_it_is_at_its_default(tiny_model, tmp_path):
    data = _data()
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tiny_model), data, tmp_path / "x", OverlapTeacher(), reporters=[StopAt(2)]).fit()
    path = tmp_path / "x" / "checkpoint" / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["config"]["student"]["reinit_top_layers"]  # as written before the field existed
    path.write_text(json.dumps(state))
    assert Trainer(_cfg(tiny_model), data, tmp_path / "x", OverlapTeacher()).fit().steps == 6
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(tiny_model), data, tmp_path / "y", OverlapTeacher(), reporters=[StopAt(2)]).fit()
    path = tmp_path / "y" / "checkpoint" / "trainer_state.json"
    state = json.loads(path.read_text())
    del state["config"]["student"]["reinit_top_layers"]
    path.write_text(json.dumps(state))
    with pytest.raises(TasbRayError, match="different 'student'"):
        Trainer(_cfg(tiny_model, student={"reinit_top_layers": 1}), data, tmp_path / "y", OverlapTeacher()).fit()
