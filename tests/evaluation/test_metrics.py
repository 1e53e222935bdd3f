import numpy as np
import pandas as pd
import pytest
import pytrec_eval

from tasb_ray.evaluation.metrics import evaluate, per_query, to_measure


def _random_case(seed=0, n_q=15, n_d=300):
    rng = np.random.default_rng(seed)
    qrels, run = [], []
    for q in range(n_q):
        for d in rng.choice(n_d, size=12, replace=False):
            qrels.append((f"q{q}", f"d{d}", int(rng.integers(0, 3))))
        scores = rng.permutation(n_d) + rng.random(n_d)  # distinct scores: no tie-order ambiguity
        run += [(f"q{q}", f"d{d}", float(s)) for d, s in enumerate(scores)]
    return (pd.DataFrame(run, columns=["query_id", "doc_id", "score"]),
            pd.DataFrame(qrels, columns=["query_id", "doc_id", "relevance"]))


def _pytrec(run, qrels, rel_level):
    qd = {q: dict(zip(g.doc_id, g.relevance.astype(int))) for q, g in qrels.groupby("query_id")}
    rd = {q: dict(zip(g.doc_id, g.score)) for q, g in run.groupby("query_id")}
    top10 = {q: dict(sorted(d.items(), key=lambda x: -x[1])[:10]) for q, d in rd.items()}
    full = pytrec_eval.RelevanceEvaluator(qd, {"ndcg_cut.10", "recall.100", "recall.1000"}, relevance_level=rel_level)
    rr = pytrec_eval.RelevanceEvaluator(qd, {"recip_rank"}, relevance_level=rel_level)
    a, b = full.evaluate(rd), rr.evaluate(top10)
    mean = lambda res, key: float(np.mean([v[key] for v in res.values()]))  # noqa: E731
    return {"nDCG@10": mean(a, "ndcg_cut_10"), "MRR@10": mean(b, "recip_rank"),
            "R@100": mean(a, "recall_100"), "R@1000": mean(a, "recall_1000")}


@pytest.mark.parametrize("rel_level", [1, 2])
def test_metrics_equal_pytrec_eval(rel_level):
    run, qrels = _random_case()
    ours = evaluate(run, qrels, rel_level=rel_level)
    theirs = _pytrec(run, qrels, rel_level)
    for m in theirs:
        assert ours[m] == pytest.approx(theirs[m], abs=1e-9), m


def test_binarisation_changes_recall_not_ndcg():
    run, qrels = _random_case(seed=3)
    one, two = evaluate(run, qrels, rel_level=1), evaluate(run, qrels, rel_level=2)
    assert one["nDCG@10"] == two["nDCG@10"]
    assert one["R@100"] != two["R@100"]
    assert str(to_measure("MRR@10", 2)) == "RR(rel=2)@10" and str(to_measure("nDCG@10", 2)) == "nDCG@10"


def test_queries_missing_from_run_count_as_zero():
    qrels = pd.DataFrame({"query_id": ["a", "b"], "doc_id": ["x", "y"], "relevance": [1, 1]})
    run = pd.DataFrame({"query_id": ["a"], "doc_id": ["x"], "score": [1.0]})
    table = per_query(run, qrels)
    assert list(table.index) == ["a", "b"]
    assert table.loc["a", "nDCG@10"] == 1.0 and table.loc["b", "nDCG@10"] == 0.0
    assert evaluate(run, qrels)["MRR@10"] == 0.5
