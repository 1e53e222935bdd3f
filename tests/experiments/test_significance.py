"""Paired statistics on synthetic per-query data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tasb_ray.experiments.robustness import compare_groups, comparisons_table
from tasb_ray.experiments.significance import (
    comparison_pairs,
    holm,
    mde,
    mde_two_groups,
    paired_test,
    permutation_p,
    power_plan,
    seed_test,
    seeds_needed,
    units_needed,
    z_sum,
)


def _queries(n):
    return [f"q{i}" for i in range(n)]


def test_holm_on_known_p_values():
    # Step-down by hand: sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 → 0.04, 0.06, 0.06 (monotone), 0.06.
    assert holm([0.03, 0.01, 0.04, 0.02]).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)
    assert holm([]).tolist() == []


def test_mde_formula_on_a_known_sd():
    assert z_sum() == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    # SciFact test: 300 queries, a per-query sd of differences of 0.167 → ~0.027 (the figure)
    assert mde(0.167, 300) == pytest.approx(2.801585 * 0.167 / math.sqrt(300), rel=1e-5)
    assert 0.026 < mde(0.167, 300) < 0.028
    assert units_needed(0.167, mde(0.167, 300)) == pytest.approx(300, abs=1)
    assert mde_two_groups(0.01, 3, 0.01, 3) == pytest.approx(z_sum() * math.sqrt(2 * 0.01 ** 2 / 3))
    assert mde_two_groups(0.01, 3, 0.0, 1) == pytest.approx(z_sum() * 0.01 / math.sqrt(3))
    assert math.isnan(mde_two_groups(0.0, 1, 0.0, 1))
    assert seeds_needed(0.01, 0.01, 0.01) == math.ceil(z_sum() ** 2 * 2)
    assert seeds_needed(0.01, 0.0, 0.01, reference_b=True) == math.ceil(z_sum() ** 2)


def test_planted_effect_is_detected_and_the_null_is_not():
    rng = np.random.default_rng(1)
    n = 300
    base = pd.Series(rng.uniform(0.2, 0.8, n), index=_queries(n))
    planted = base + 0.05 + pd.Series(rng.normal(0, 0.1, n), index=base.index)
    null = base + pd.Series(rng.normal(0, 0.1, n), index=base.index)
    hit, miss = paired_test(planted, base), paired_test(null, base)
    assert hit["p_value"] < 1e-6 and hit["p_perm"] < 1e-3
    assert hit["ci95_low"] < 0.05 < hit["ci95_high"] and hit["ci95_low"] > 0
    assert miss["p_value"] > 0.05 and miss["p_perm"] > 0.05 and miss["ci95_low"] < 0 < miss["ci95_high"]
    # The planted 0.05 is above what 300 queries detect at this sd; the MDE is ~2.8 sd/sqrt(n).
    assert hit["mde_queries"] == pytest.approx(z_sum() * hit["sd_diff"] / math.sqrt(n))
    assert hit["mde_queries"] < 0.05


def test_ci_and_tests_equal_direct_computation():
    rng = np.random.default_rng(0)
    a = pd.Series(rng.random(40), index=_queries(40))
    b = a - 0.03 + rng.normal(0, 0.05, 40)
    r = paired_test(a, b)
    d = (a - b).to_numpy()
    half = stats.t.ppf(0.975, 39) * d.std(ddof=1) / math.sqrt(40)
    assert r["ci95_low"] == pytest.approx(d.mean() - half) and r["ci95_high"] == pytest.approx(d.mean() + half)
    assert r["sd_diff"] == pytest.approx(d.std(ddof=1))
    assert r["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # The randomization test and the t-test agree closely on well-behaved differences, and it is deterministic.
    assert r["p_perm"] == pytest.approx(r["p_value"], abs=0.02)
    assert permutation_p(d) == permutation_p(d)


def test_exact_sign_flip_distribution_for_few_queries():
    # 4 queries all +: of the 16 sign patterns, only all-+ and all-- reach |mean| this large → p = 2/16.
    assert permutation_p(np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(2 / 16)
    assert permutation_p(np.zeros(5)) == 1.0


def _pq(shifts: dict[str, float], seeds: dict[str, int], n: int = 200, seed_sd: float = 0.01, noise=0.1):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.2, 0.8, n)
    rows = []
    for group, shift in shifts.items():
        for s in range(seeds[group]):
            values = base + shift + (rng.normal(0, seed_sd) if seeds[group] > 1 else 0.0) + (
                rng.normal(0, noise, n) if seeds[group] > 1 else 0.0)
            for q, v in enumerate(values):
                rows.append({"group": group, "trial": f"{group}-{s}", "query_id": f"q{q}", "measure": "nDCG@10",
                             "value": v})
    return pd.DataFrame(rows)


def test_compare_groups_against_baseline_and_reference_with_holm():
    pq = _pq({"tasb": 0.06, "random": 0.0, "untrained": -0.03}, {"tasb": 3, "random": 3, "untrained": 1})
    df = compare_groups(pq, "random", ["nDCG@10"], reference="untrained", n_resamples=2000)
    assert list(zip(df["group"], df["baseline"])) == [("tasb", "random"), ("tasb", "untrained"),
                                                      ("random", "untrained")]
    assert (df["p_holm"] >= df["p_value"]).all() and (df["p_holm"] <= 1).all()
    assert df["p_holm"].tolist() == pytest.approx(holm(df["p_value"]).tolist())
    row = df.set_index(["group", "baseline"]).loc[("tasb", "random")]
    assert row["mean_diff"] == pytest.approx(0.06, abs=0.02) and row["p_holm"] < 0.001
    ref = df.set_index(["group", "baseline"]).loc[("random", "untrained")]
    assert (ref["seeds_a"], ref["seeds_b"]) == (3, 1)
    # Against the deterministic reference only the trained side's seed sd counts.
    means = pq[pq["group"] == "random"].groupby("trial")["value"].mean()
    assert ref["mde_seeds"] == pytest.approx(z_sum() * means.std(ddof=1) / math.sqrt(3))
    table = comparisons_table(df)
    assert {"95% CI", "p_t_holm", "p_perm", "mde_queries", "mde_seeds", "p_seeds", "p_seeds_holm"} <= set(table.columns)
    assert table.iloc[0]["95% CI"].startswith("[+")
    # The seed-level test: Welch over the per-seed means, one-sample against the one-trial reference; Holm.
    seeds = {g: pq[pq["group"] == g].groupby("trial")["value"].mean().to_numpy() for g in ("tasb", "random", "untrained")}
    tasb = df.set_index(["group", "baseline"]).loc[("tasb", "random")]
    assert tasb["p_seeds"] == pytest.approx(stats.ttest_ind(seeds["tasb"], seeds["random"], equal_var=False).pvalue)
    assert ref["p_seeds"] == pytest.approx(stats.ttest_1samp(seeds["random"], seeds["untrained"][0]).pvalue)
    assert df["p_seeds_holm"].tolist() == pytest.approx(holm(df["p_seeds"]).tolist())


def test_seed_test_edge_cases():
    assert math.isnan(seed_test([0.3], [0.2]))                       # one trial on both sides: no seed variance
    assert seed_test([0.3, 0.3], [0.3, 0.3]) == 1.0 and seed_test([0.3, 0.3], [0.2, 0.2]) == 0.0
    assert seed_test([0.1], [0.2, 0.3, 0.25]) == pytest.approx(stats.ttest_1samp([0.2, 0.3, 0.25], 0.1).pvalue)
    # The re-initialised NFCorpus comparison's per-seed test R@100 (tas-balanced, random): clearly apart at 5 seeds.
    assert seed_test([0.1705, 0.1726, 0.1752, 0.1701, 0.1670], [0.1818, 0.1934, 0.1790, 0.1895, 0.1943]) < 0.01


def test_comparison_pairs_order():
    assert comparison_pairs(["a", "b", "u"], "b", "u") == [("a", "b"), ("a", "u"), ("b", "u")]
    assert comparison_pairs(["a", "b"], "b") == [("a", "b")]


def test_power_plan_from_a_two_seed_pilot():
    pq = _pq({"tasb": 0.01, "random": 0.0, "untrained": 0.0}, {"tasb": 2, "random": 2, "untrained": 1},
             n=300, seed_sd=0.005, noise=0.1)
    plan = power_plan(pq, [("tasb", "random"), ("tasb", "untrained")], ["nDCG@10"], effect=0.01,
                      reference="untrained")
    row = plan.iloc[0]
    assert (row["queries"], row["seeds_a"], row["seeds_b"]) == (300, 2, 2)
    assert row["queries_needed"] == math.ceil((z_sum() * row["sd_diff"] / 0.01) ** 2)
    assert row["queries_needed"] > 300  # an effect of 0.01 at this sd needs more queries than SciFact has
    assert row["mde_queries"] > 0.01
    assert row["seeds_needed"] == seeds_needed(row["sd_seed_a"], row["sd_seed_b"], 0.01)
    assert math.isnan(plan.iloc[1]["sd_seed_b"])
    assert plan.iloc[1]["seeds_needed"] == seeds_needed(plan.iloc[1]["sd_seed_a"], 0.0, 0.01, reference_b=True)
