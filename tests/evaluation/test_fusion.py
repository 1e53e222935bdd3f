"""Fusion maths on hand-made runs: interpolation with missing documents, RRF ranks and tie-breaks."""

import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.evaluation.fusion import interpolate, minmax_normalise, reciprocal_rank_fusion, sort_run


def run(rows):
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])


def as_dict(fused, q):
    part = fused[fused.query_id == q]
    return dict(zip(part.doc_id, part.score))


def order(fused, q):
    return fused[fused.query_id == q].doc_id.tolist()


A = run([("q1", "x", 10.0), ("q1", "y", 5.0), ("q1", "z", 0.0), ("q2", "u", 3.0)])
B = run([("q1", "y", 4.0), ("q1", "w", 2.0), ("q3", "v", 7.0), ("q3", "t", 1.0)])


def test_interpolation_with_missing_documents():
    fused = interpolate(A, B, weight_b=0.5)
    # q1: a normalises to x 1, y .5, z 0; b to y 1, w 0; a document missing from a run counts 0 there.
    assert as_dict(fused, "q1") == pytest.approx({"x": 0.5, "y": 0.75, "z": 0.0, "w": 0.0})
    assert order(fused, "q1") == ["y", "x", "w", "z"]  # w and z tie at 0: doc id ascending
    # A query only one run has: a single document has a constant score, normalised to 1.
    assert as_dict(fused, "q2") == pytest.approx({"u": 0.5})
    assert as_dict(fused, "q3") == pytest.approx({"v": 0.5, "t": 0.0})
    assert list(fused.query_id.unique()) == ["q1", "q2", "q3"]

    weighted = interpolate(A, B, weight_b=0.25)
    assert as_dict(weighted, "q1") == pytest.approx({"x": 0.75, "y": 0.625, "z": 0.0, "w": 0.0})


def test_interpolation_weights_zero_and_one_keep_one_runs_order():
    a = run([("q", f"a{i}", float(s)) for i, s in enumerate([3.0, 9.0, 1.0, 9.0, 4.0])] + [("q", "both", 2.0)])
    b = run([("q", f"b{i}", float(s)) for i, s in enumerate([0.3, 0.1, 0.7])] + [("q", "both", 0.9)])
    for weight, own in ((0.0, a), (1.0, b)):
        fused = interpolate(a, b, weight_b=weight)
        expected = sort_run(own).doc_id.tolist()  # score descending, ties by doc id
        got = [d for d in fused.doc_id if d in set(own.doc_id)]
        assert got == expected
        # Documents only the other run has score 0: nothing of the weighted run is below them.
        others = fused[~fused.doc_id.isin(own.doc_id)]
        assert (others.score == 0).all()
        assert fused.doc_id.iloc[0] == expected[0]


def test_interpolation_depth_and_errors():
    fused = interpolate(A, B, depth=2)
    assert fused.groupby("query_id").size().to_dict() == {"q1": 2, "q2": 1, "q3": 2}
    with pytest.raises(ConfigError, match="weight"):
        interpolate(A, B, weight_b=1.5)
    with pytest.raises(ConfigError, match="depth"):
        interpolate(A, B, depth=0)
    with pytest.raises(TasbRayError, match="appears twice"):
        interpolate(pd.concat([A, A.iloc[:1]]), B)
    with pytest.raises(TasbRayError, match="lacks column"):
        interpolate(A.rename(columns={"score": "s"}), B)


def test_minmax_constant_scores_map_to_one():
    r = run([("q", "a", 2.0), ("q", "b", 2.0), ("p", "c", 1.0), ("p", "d", 3.0)])
    assert list(minmax_normalise(r)) == [1.0, 1.0, 0.0, 1.0]


def test_rrf_ranks_and_tie_break():
    a = run([("q", "d1", 3.0), ("q", "d3", 2.0), ("q", "d2", 2.0)])  # d2 and d3 tie: d2 gets rank 2
    b = run([("q", "d3", 5.0), ("q", "d4", 1.0)])
    fused = reciprocal_rank_fusion([a, b], k=60)
    want = {"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63 + 1 / 61, "d4": 1 / 62}
    assert as_dict(fused, "q") == pytest.approx(want, abs=1e-15)
    assert order(fused, "q") == ["d3", "d1", "d2", "d4"]  # d2 and d4 tie exactly: doc id ascending
    # Row order of the inputs does not matter.
    again = reciprocal_rank_fusion([a.iloc[::-1], b.iloc[::-1]], k=60)
    pd.testing.assert_frame_equal(again, fused)


def test_rrf_single_run_keeps_order_and_k_matters():
    a = run([("q", "x", 0.1), ("q", "y", 0.9), ("q", "z", 0.5), ("r", "x", 1.0)])
    fused = reciprocal_rank_fusion([a], k=0, depth=2)
    assert order(fused, "q") == ["y", "z"]
    assert as_dict(fused, "q") == pytest.approx({"y": 1.0, "z": 0.5})
    assert as_dict(fused, "r") == pytest.approx({"x": 1.0})
    # k trades agreement against top ranks: 'mid' is third in both runs, 'top' first in one only.
    a = run([("q", "top", 3.0), ("q", "a2", 2.0), ("q", "mid", 1.0)])
    b = run([("q", "other", 3.0), ("q", "b2", 2.0), ("q", "mid", 1.0)])
    assert order(reciprocal_rank_fusion([a, b], k=0), "q")[:2] == ["other", "top"]  # 1 > 1/3 + 1/3
    assert order(reciprocal_rank_fusion([a, b], k=60), "q")[0] == "mid"  # 2/63 > 1/61
    with pytest.raises(ConfigError, match="at least one run"):
        reciprocal_rank_fusion([])
    with pytest.raises(ConfigError, match="k must be"):
        reciprocal_rank_fusion([a], k=-1)


def _random_runs(seed):
    """Two runs over a few queries with overlapping documents, some tied scores, shuffled rows."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(2):
        rows = []
        for q in ("q10", "q2", "q3"):
            for d in rng.choice(40, size=int(rng.integers(1, 25)), replace=False):
                rows.append((q, f"d{d}", float(rng.integers(0, 6))))  # few distinct values: ties
        runs.append(run(rows).sample(frac=1.0, random_state=seed))
    return runs


def _reference(scores_by_query, depth):
    """Plain-Python sort: query id, score descending, doc id ascending, top depth."""
    rows = []
    for q in sorted(scores_by_query):
        ranked = sorted(scores_by_query[q].items(), key=lambda x: (-x[1], x[0]))[:depth]
        rows += [(q, d, s) for d, s in ranked]
    return run(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fusion_matches_a_plain_python_reference(seed):
    a, b = _random_runs(seed)
    depth, w, k = 15, 0.3, 5
    norm = []
    for r in (a, b):
        lo, hi = r.groupby("query_id").score.min(), r.groupby("query_id").score.max()
        norm.append({(q, d): (s - lo[q]) / (hi[q] - lo[q]) if hi[q] > lo[q] else 1.0
                     for q, d, s in r.itertuples(index=False)})
    inter, rrf = {}, {}
    for (q, d) in set(norm[0]) | set(norm[1]):
        inter.setdefault(q, {})[d] = (1 - w) * norm[0].get((q, d), 0.0) + w * norm[1].get((q, d), 0.0)
    for r in (a, b):
        for q, part in r.groupby("query_id"):
            ranked = sorted(zip(part.doc_id, part.score), key=lambda x: (-x[1], x[0]))
            for rank, (d, _) in enumerate(ranked, start=1):
                rrf.setdefault(q, {})[d] = rrf.get(q, {}).get(d, 0.0) + 1.0 / (k + rank)
    for got, want in ((interpolate(a, b, w, depth), _reference(inter, depth)),
                      (reciprocal_rank_fusion([a, b], k, depth), _reference(rrf, depth))):
        assert got.query_id.tolist() == want.query_id.tolist()
        assert got.doc_id.tolist() == want.doc_id.tolist()
        np.testing.assert_allclose(got.score.to_numpy(), want.score.to_numpy(), rtol=0, atol=1e-12)
    assert sort_run(a, depth=3).groupby("query_id").size().max() == 3
