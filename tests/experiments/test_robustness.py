"""Statistics across seeds and paired per-query tests, checked against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasb_ray.experiments.robustness import compare_groups, group_summary, paired_test, summarize


def test_summarize_matches_textbook_formulas():
    x = [0.61, 0.65, 0.64, 0.70]
    s = summarize(x)
    mean, sd = np.mean(x), np.std(x, ddof=1)
    half = stats.t.ppf(0.975, 3) * sd / math.sqrt(4)
    assert s["mean"] == pytest.approx(mean) and s["sd"] == pytest.approx(sd)
    assert (s["min"], s["max"], s["n"]) == (0.61, 0.70, 4)
    assert s["ci95_low"] == pytest.approx(mean - half) and s["ci95_high"] == pytest.approx(mean + half)
    one = summarize([0.5])
    assert one["sd"] == 0 and one["ci95_low"] == one["ci95_high"] == 0.5
    assert summarize([]) == {"n": 0}


def test_group_summary_groups_trials():
    metrics = {"a0": {"m": 1.0}, "a1": {"m": 3.0}, "b0": {"m": 5.0}}
    groups = {"a0": "A", "a1": "A", "b0": "B"}
    df = group_summary(metrics, groups).set_index("group")
    assert df.loc["A", "mean"] == 2.0 and df.loc["A", "sd"] == pytest.approx(math.sqrt(2))
    assert df.loc["B", "n"] == 1


def test_paired_test_equals_scipy_and_cohens_dz():
    rng = np.random.default_rng(0)
    a = pd.Series(rng.random(50), index=[f"q{i}" for i in range(50)])
    b = a - 0.05 + rng.normal(0, 0.05, 50)
    r = paired_test(a, b)
    ref = stats.ttest_rel(a.to_numpy(), b.to_numpy())
    diff = a.to_numpy() - b.to_numpy()
    assert r["p_value"] == pytest.approx(ref.pvalue) and r["t"] == pytest.approx(ref.statistic)
    assert r["effect_size"] == pytest.approx(diff.mean() / diff.std(ddof=1))
    assert r["mean_diff"] == pytest.approx(diff.mean())
    # a query missing from one side counts as 0 there
    r2 = paired_test(a.iloc[:-1], b)
    assert r2["queries"] == 50 and r2["mean_a"] == pytest.approx(a.iloc[:-1].sum() / 50)
    assert paired_test(a, a)["p_value"] == 1.0


def test_compare_groups_averages_seeds_per_query_first():
    rows = []
    for group, shift in (("base", 0.0), ("new", 0.1)):
        for seed in (0, 1):
            for q in range(20):
                noise = 0.02 * ((q * 7) % 5) if group == "new" else 0.0
                rows.append({"group": group, "trial": f"{group}{seed}", "query_id": f"q{q}", "measure": "nDCG@10",
                             "value": q / 40 + shift + noise + 0.01 * seed})
    df = compare_groups(pd.DataFrame(rows), "base", ["nDCG@10", "R@100"])
    assert len(df) == 1
    row = df.iloc[0]
    base = np.array([q / 40 + 0.005 for q in range(20)])
    new = np.array([q / 40 + 0.1 + 0.02 * ((q * 7) % 5) + 0.005 for q in range(20)])
    ref = stats.ttest_rel(new, base)
    assert row["group"] == "new" and row["mean_diff"] == pytest.approx((new - base).mean())
    assert row["p_value"] == pytest.approx(ref.pvalue)
    shifted = paired_test(pd.Series([0.1, 0.2, 0.3]), pd.Series([0.0, 0.1, 0.2]))
    assert shifted["p_value"] == 0.0 and math.isnan(shifted["effect_size"])
