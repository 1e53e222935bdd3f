"""Robustness of a configuration across seeds, and paired per-query tests between configurations.

Seeds are repetitions of one configuration: for each metric we report mean, sample sd (ddof 1), min,
max and a 95% confidence interval of the mean from Student's t with n − 1 degrees of freedom.

Two configurations are compared per query: each query's metric is first averaged over the seeds of a
configuration, then the per-query differences are tested (:mod:`tasb_ray.experiments.significance`: the
difference's 95% CI, its per-query sd, a paired t-test and a paired randomization test, Holm's adjustment
over the table, Cohen's d_z and the minimum detectable effects over queries and over seeds).

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

from tasb_ray.experiments.significance import (
    N_RESAMPLES,
    comparison_pairs,
    holm,
    mde_two_groups,
    paired_test,
    seed_spread,
    seed_test,
    seed_values,
)

__all__ = ["STATS", "compare_groups", "comparisons_table", "group_summary", "paired_test", "robustness_table",
           "summarize"]

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


COMPARISON_COLUMNS = ["group", "baseline", "measure", "queries", "mean_a", "mean_b", "mean_diff", "ci95_low",
                      "ci95_high", "sd_diff", "t", "p_value", "p_perm", "p_holm", "p_perm_holm", "effect_size",
                      "mde_queries", "seeds_a", "seeds_b", "mde_seeds", "p_seeds", "p_seeds_holm"]


def compare_groups(per_query: pd.DataFrame, baseline: str, measures: Sequence[str],
                   reference: str | None = None, n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """Every group against ``baseline`` and, when given, every group against ``reference``, per measure.

    Holm's adjustment runs over all rows of the result (every group, both baselines, every measure): the
    family is everything this table claims.

    Args:
        per_query: columns group, trial, query_id, measure, value (one trial = one seed).
        baseline: the group label the others are compared with.
        measures: metric names, e.g. ``["nDCG@10", "R@100"]``.
        reference: the untrained reference group, also compared against (None: none).
        n_resamples: sign-flip resamples of the randomization test.
    """
    if per_query.empty or baseline not in set(per_query["group"]):
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    # Average each query over the seeds of a group first: the unit of the test is the query.
    means = per_query.groupby(["group", "measure", "query_id"])["value"].mean()
    spread = seed_spread(per_query)
    per_seed = seed_values(per_query)
    groups = list(dict.fromkeys(per_query["group"]))
    rows = []
    for group, against in comparison_pairs(groups, baseline, reference):
        for m in measures:
            try:
                a, b = means.loc[(group, m)], means.loc[(against, m)]
            except KeyError:
                continue
            (sa, ra), (sb, rb) = spread[(group, m)], spread[(against, m)]
            rows.append({"group": group, "baseline": against, "measure": m, **paired_test(a, b, n_resamples),
                         "seeds_a": ra, "seeds_b": rb, "mde_seeds": mde_two_groups(sa, ra, sb, rb),
                         "p_seeds": seed_test(per_seed[(group, m)], per_seed[(against, m)])})
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    if len(out):
        out["p_holm"] = holm(out["p_value"])
        out["p_perm_holm"] = holm(out["p_perm"])
        out["p_seeds_holm"] = holm(out["p_seeds"])
    return out


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


def _num(fmt: str):
    return lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def comparisons_table(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The paired comparisons for reading: difference with its 95% CI, both tests, Holm, both MDEs."""
    if comparisons.empty:
        return comparisons
    c = comparisons
    out = c[["group", "baseline", "measure", "queries"]].copy()
    out["mean_diff"] = c["mean_diff"].map(_num("+.4f"))
    out["95% CI"] = [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(c["ci95_low"], c["ci95_high"])]
    out["sd_diff"] = c["sd_diff"].map(_num(".4f"))
    out["p_t"] = c["p_value"].map(_num(".4f"))
    out["p_perm"] = c["p_perm"].map(_num(".4f"))
    out["p_t_holm"] = c["p_holm"].map(_num(".4f"))
    out["p_perm_holm"] = c["p_perm_holm"].map(_num(".4f"))
    out["effect_size"] = c["effect_size"].map(_num("+.3f"))
    out["mde_queries"] = c["mde_queries"].map(_num(".4f"))
    out["seeds"] = [f"{a}/{b}" for a, b in zip(c["seeds_a"], c["seeds_b"])]
    out["mde_seeds"] = c["mde_seeds"].map(_num(".4f"))
    if "p_seeds" in c:  # tables written before the seed-level test have no such column
        out["p_seeds"] = c["p_seeds"].map(_num(".4f"))
        out["p_seeds_holm"] = c["p_seeds_holm"].map(_num(".4f"))
    return out
