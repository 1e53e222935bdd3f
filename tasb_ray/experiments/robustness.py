"""Robustness of a configuration across seeds, and paired per-query tests between configurations.

Seeds are repetitions of one configuration: for each metric we report mean, sample sd (ddof 1), min,
max and a 95% confidence interval of the mean from Student's t with n − 1 degrees of freedom.

Two configurations are compared per query: each query's metric is first averaged over the seeds of a
configuration, then a paired t-test runs over the queries (scipy ``ttest_rel``), with Cohen's d_z
(mean of the per-query differences over their sd) as the effect size.

References:
    Sakai, "Statistical reform in information retrieval?", SIGIR Forum 2014 (effect sizes with p-values);
    Smucker, Allan & Carterette, "A comparison of statistical significance tests for IR evaluation", CIKM 2007.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

STATS = ("mean", "sd", "min", "max", "ci95_low", "ci95_high", "n")


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sd, min, max and the 95% t-interval of ``values``; with one value the sd is 0 and the interval a point."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"n": 0}
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "sd": sd, "min": float(x.min()), "max": float(x.max()),
            "ci95_low": mean - half, "ci95_high": mean + half, "n": n}


def group_summary(metrics: Mapping[str, Mapping[str, float]], groups: Mapping[str, str]) -> pd.DataFrame:
    """One row per (group, metric) with :data:`STATS` over the group's trials.

    Args:
        metrics: trial key -> metric -> value (finished trials only).
        groups: trial key -> group label.
    """
    rows = []
    by_group: dict[str, list[str]] = {}
    for trial in metrics:
        by_group.setdefault(groups[trial], []).append(trial)
    for group, trials in by_group.items():
        names = sorted({m for t in trials for m in metrics[t]})
        for name in names:
            rows.append({"group": group, "metric": name, **summarize([metrics[t].get(name) for t in trials
                                                                       if metrics[t].get(name) is not None])})
    return pd.DataFrame(rows, columns=["group", "metric", *STATS])


def paired_test(a: pd.Series, b: pd.Series) -> dict[str, float]:
    """Paired t-test of per-query values ``a`` vs ``b`` (indexed by query id; queries in only one count as 0)."""
    index = a.index.union(b.index)
    x = a.reindex(index, fill_value=0.0).to_numpy(np.float64)
    y = b.reindex(index, fill_value=0.0).to_numpy(np.float64)
    diff = x - y
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    if sd <= 1e-12 * max(1.0, abs(float(diff.mean()))):
        # Degenerate: every query differs by the same amount (float noise aside). Equal runs give no evidence;
        # a constant non-zero shift has an unbounded t, reported as p = 0 with no finite effect size.
        same = abs(float(diff.mean())) <= 1e-12
        return {"queries": len(index), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
                "mean_diff": float(diff.mean()), "t": 0.0 if same else math.copysign(math.inf, diff.mean()),
                "p_value": 1.0 if same else 0.0, "effect_size": 0.0 if same else math.nan}
    else:
        res = stats.ttest_rel(x, y)
        t, p = float(res.statistic), float(res.pvalue)
    return {"queries": len(index), "mean_a": float(x.mean()), "mean_b": float(y.mean()),
            "mean_diff": float(diff.mean()), "t": t, "p_value": p,
            "effect_size": float(diff.mean() / sd) if sd > 0 else 0.0}


def compare_groups(per_query: pd.DataFrame, baseline: str, measures: Sequence[str]) -> pd.DataFrame:
    """Every group against ``baseline``, per measure.

    Args:
        per_query: columns group, trial, query_id, measure, value (one trial = one seed).
        baseline: the group label the others are compared with.
        measures: metric names, e.g. ``["nDCG@10", "R@100"]``.
    """
    cols = ["group", "baseline", "measure", "queries", "mean_a", "mean_b", "mean_diff", "t", "p_value", "effect_size"]
    if per_query.empty or baseline not in set(per_query["group"]):
        return pd.DataFrame(columns=cols)
    # Average each query over the seeds of a group first: the unit of the test is the query.
    means = per_query.groupby(["group", "measure", "query_id"])["value"].mean()
    rows = []
    for group in dict.fromkeys(per_query["group"]):
        if group == baseline:
            continue
        for m in measures:
            try:
                a, b = means.loc[(group, m)], means.loc[(baseline, m)]
            except KeyError:
                continue
            rows.append({"group": group, "baseline": baseline, "measure": m, **paired_test(a, b)})
    return pd.DataFrame(rows, columns=cols)


def robustness_table(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Wide table: one row per group, ``metric`` columns formatted ``mean ± sd``, plus n and min–max."""
    rows = []
    for group, part in summary.groupby("group", sort=False):
        row: dict = {"configuration": group}
        for m in metrics:
            r = part[part["metric"] == m]
            if r.empty:
                continue
            r = r.iloc[0]
            row[m] = f"{r['mean']:.4f} ± {r['sd']:.4f}"
            row[f"{m} [min, max]"] = f"[{r['min']:.4f}, {r['max']:.4f}]"
            row["seeds"] = int(r["n"])
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    if comparisons.empty:
        return comparisons
    out = comparisons[["group", "baseline", "measure", "queries", "mean_diff", "p_value", "effect_size"]].copy()
    out["mean_diff"] = out["mean_diff"].map(lambda v: f"{v:+.4f}")
    out["p_value"] = out["p_value"].map(lambda v: f"{v:.4f}")
    out["effect_size"] = out["effect_size"].map(lambda v: f"{v:+.3f}")
    return out
