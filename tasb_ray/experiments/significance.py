"""Paired statistics that can answer: CI of the difference, a permutation test, Holm, minimum detectable effects.

A comparison of configuration A with B is paired over queries: each query's metric is averaged over the seeds of a
configuration first, then the per-query differences d = a − b are tested.

- ``ci95_low``/``ci95_high``: Student's t interval of the mean difference, mean(d) ± t(0.975, n−1)·sd(d)/√n.
- ``sd_diff``: the per-query sample sd of d (ddof 1).
- ``p_value``: paired t-test (``scipy.stats.ttest_rel``); ``p_perm``: paired randomization test, every query's
  sign flipped at random (``scipy.stats.permutation_test`` with ``permutation_type='samples'``, a fixed
  ``random_state``, 10,000 resamples, or the exact distribution when 2^n is smaller). IR metrics are bounded and
  skewed; the randomization test does not assume normal differences (Smucker, Allan & Carterette, CIKM 2007).
- ``p_holm``/``p_perm_holm``: Holm's step-down adjustment over every comparison of one table (all groups, all
  measures), which controls the family-wise error rate without assuming independence.
- ``mde_queries``: the smallest true mean difference a two-sided paired test at α = 0.05 detects with 80% power
  over these queries, normal approximation: (z(1−α/2) + z(power)) · sd(d) / √n.
- ``mde_seeds``: the same over seeds: the difference of two groups' mean metric over their seeds, with the
  between-seed sds s_a, s_b of the per-seed metric (averaged over queries) and r_a, r_b seeds:
  (z(1−α/2) + z(power)) · √(s_a²/r_a + s_b²/r_b). A group with one trial (the deterministic untrained reference)
  contributes no seed variance; with one trial on both sides the value is NaN.
- ``p_seeds``/``p_seeds_holm``: the test whose unit is the training run, not the query: Welch's t-test of the two
  groups' per-seed metrics (averaged over queries), or a one-sample t-test of a group's seeds against a
  one-trial group's value (the untrained reference); NaN below two seeds on the tested side. The per-query tests
  treat the trained models as fixed, so they answer "do these models differ on these queries"; this one asks
  whether another set of seeds would differ the same way, and is far weaker at 5 seeds. Holm as above, over the
  rows that have it.

References: Sakai, "Statistical reform in information retrieval?", SIGIR Forum 2014; Holm, "A simple sequentially
rejective multiple test procedure", Scand. J. Statistics 1979; Cohen, Statistical Power Analysis, 1988 (ch. 2).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.8
N_RESAMPLES = 10_000
PERMUTATION_SEED = 0


def z_sum(alpha: float = ALPHA, power: float = POWER) -> float:
    """z(1 − α/2) + z(power): 1.960 + 0.842 = 2.802 for α 0.05 and 80% power."""
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def mde(sd: float, n: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference of a two-sided paired test over ``n`` units with difference sd ``sd``."""
    if n < 1 or sd is None or math.isnan(sd):
        return math.nan
    return z_sum(alpha, power) * sd / math.sqrt(n)


def mde_two_groups(sd_a: float, n_a: int, sd_b: float, n_b: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference of two groups' means over seeds (one trial: no seed variance on that side)."""
    var = (sd_a ** 2 / n_a if n_a > 1 else 0.0) + (sd_b ** 2 / n_b if n_b > 1 else 0.0)
    if (n_a <= 1 and n_b <= 1) or math.isnan(var):
        return math.nan
    return z_sum(alpha, power) * math.sqrt(var)


def units_needed(sd: float, effect: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Paired units (queries) needed to detect ``effect`` with difference sd ``sd``: ⌈((z+z)·sd/effect)²⌉."""
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    if sd is None or math.isnan(sd):
        return math.nan
    return float(max(2, math.ceil((z_sum(alpha, power) * sd / effect) ** 2)))


def seeds_needed(sd_a: float, sd_b: float, effect: float, reference_b: bool = False, alpha: float = ALPHA,
                 power: float = POWER) -> float:
    """Seeds per group so that two groups' seed means differ detectably by ``effect``.

    r = ⌈(z+z)² · (s_a² + s_b²) / effect²⌉ with the same r on both sides, or s_b = 0 when B is the deterministic
    reference (``reference_b``).
    """
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got {effect}")
    var = sd_a ** 2 + (0.0 if reference_b else sd_b ** 2)
    if math.isnan(var):
        return math.nan
    return float(max(2, math.ceil(z_sum(alpha, power) ** 2 * var / effect ** 2)))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        # The i-th smallest is compared at α/(m − i); the max keeps adjusted values monotone in the raw ones.
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _mean_stat(d, axis=-1):
    return np.mean(d, axis=axis)


def permutation_p(diff: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = PERMUTATION_SEED) -> float:
    """Two-sided paired randomization test of mean(diff) = 0 by random sign flips."""
    if len(diff) < 2 or np.all(np.abs(diff) <= 1e-12):
        return 1.0
    res = stats.permutation_test((diff,), _mean_stat, permutation_type="samples", vectorized=True,
                                 n_resamples=n_resamples, alternative="two-sided", random_state=seed)
    return float(res.pvalue)


def paired_test(a: pd.Series, b: pd.Series, n_resamples: int = N_RESAMPLES) -> dict[str, float]:
    """Paired statistics of per-query values ``a`` vs ``b`` (indexed by query id; queries in only one count as 0)."""
    index = a.index.union(b.index)
    x = a.reindex(index, fill_value=0.0).to_numpy(np.float64)
    y = b.reindex(index, fill_value=0.0).to_numpy(np.float64)
    diff = x - y
    n = len(diff)
    mean = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n > 1 else 0.0
    out = {"queries": n, "mean_a": float(x.mean()), "mean_b": float(y.mean()), "mean_diff": mean, "sd_diff": sd,
           "mde_queries": mde(sd, n)}
    if sd <= 1e-12 * max(1.0, abs(mean)):
        # Degenerate: every query differs by the same amount (float noise aside). Equal runs give no evidence;
        # a constant non-zero shift has an unbounded t, reported as p = 0 with no finite effect size.
        same = abs(mean) <= 1e-12
        return {**out, "ci95_low": mean, "ci95_high": mean, "t": 0.0 if same else math.copysign(math.inf, mean),
                "p_value": 1.0 if same else 0.0, "p_perm": 1.0 if same else permutation_p(diff, n_resamples),
                "effect_size": 0.0 if same else math.nan}
    res = stats.ttest_rel(x, y)
    half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
    return {**out, "ci95_low": mean - half, "ci95_high": mean + half, "t": float(res.statistic),
            "p_value": float(res.pvalue), "p_perm": permutation_p(diff, n_resamples), "effect_size": mean / sd}


def seed_means(per_query: pd.DataFrame) -> pd.DataFrame:
    """Each trial's metric averaged over the queries: columns group, trial, measure, value."""
    if per_query.empty:
        return pd.DataFrame(columns=["group", "trial", "measure", "value"])
    return per_query.groupby(["group", "trial", "measure"], sort=False)["value"].mean().reset_index()


def seed_test(a: Sequence[float], b: Sequence[float]) -> float:
    """p of the seed-level test (module docstring, ``p_seeds``) for per-seed metrics ``a`` and ``b``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) >= 2 and len(b) >= 2:
        if a.std(ddof=1) == 0 and b.std(ddof=1) == 0:
            return 1.0 if a.mean() == b.mean() else 0.0
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    if len(a) >= 2 and len(b) == 1 or len(a) == 1 and len(b) >= 2:
        many, one = (a, b) if len(a) >= 2 else (b, a)
        if many.std(ddof=1) == 0:
            return 1.0 if many.mean() == one[0] else 0.0
        return float(stats.ttest_1samp(many, one[0]).pvalue)
    return math.nan


def seed_values(per_query: pd.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """(group, measure) → the per-seed metric (each trial's mean over the queries)."""
    return {(group, measure): part["value"].to_numpy(np.float64)
            for (group, measure), part in seed_means(per_query).groupby(["group", "measure"], sort=False)}


def seed_spread(per_query: pd.DataFrame) -> dict[tuple[str, str], tuple[float, int]]:
    """(group, measure) → (between-seed sd of the per-seed mean, number of seeds)."""
    out = {}
    for (group, measure), part in seed_means(per_query).groupby(["group", "measure"], sort=False):
        v = part["value"].to_numpy(np.float64)
        out[(group, measure)] = (float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
    return out


def comparison_pairs(groups: Sequence[str], baseline: str, reference: str | None = None) -> list[tuple[str, str]]:
    """(group, against) pairs: every group against the baseline, then every group against the reference."""
    pairs = [(g, baseline) for g in groups if g not in (baseline, reference)]
    if reference is not None and reference in groups:
        pairs += [(g, reference) for g in groups if g != reference]
    return pairs


def power_plan(per_query: pd.DataFrame, pairs: Sequence[tuple[str, str]], measures: Sequence[str], effect: float,
               alpha: float = ALPHA, power: float = POWER, reference: str | None = None) -> pd.DataFrame:
    """From a pilot's per-query values: what the queries and seeds at hand detect, and what ``effect`` would need.

    Args:
        per_query: columns group, trial, query_id, measure, value (one split).
        pairs: (group, against) comparisons.
        measures: metric names.
        effect: the mean difference to detect.
        reference: the deterministic group (one trial, no seed variance), if any.

    Returns:
        One row per (group, against, measure): queries and seeds at hand, ``sd_diff`` (per query, seeds averaged),
        ``sd_seed_a``/``sd_seed_b`` (between seeds), both minimum detectable effects, and ``queries_needed`` /
        ``seeds_needed`` for ``effect``.
    """
    cols = ["group", "against", "measure", "queries", "seeds_a", "seeds_b", "sd_diff", "sd_seed_a", "sd_seed_b",
            "mde_queries", "mde_seeds", "effect", "queries_needed", "seeds_needed"]
    if per_query.empty:
        return pd.DataFrame(columns=cols)
    means = per_query.groupby(["group", "measure", "query_id"])["value"].mean()
    spread = seed_spread(per_query)
    rows = []
    for group, against in pairs:
        for m in measures:
            if (group, m) not in spread or (against, m) not in spread:
                continue
            a, b = means.loc[(group, m)], means.loc[(against, m)]
            index = a.index.union(b.index)
            diff = a.reindex(index, fill_value=0.0).to_numpy() - b.reindex(index, fill_value=0.0).to_numpy()
            sd = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
            (sa, ra), (sb, rb) = spread[(group, m)], spread[(against, m)]
            rows.append({"group": group, "against": against, "measure": m, "queries": len(diff), "seeds_a": ra,
                         "seeds_b": rb, "sd_diff": sd, "sd_seed_a": sa if ra > 1 else math.nan,
                         "sd_seed_b": sb if rb > 1 else math.nan, "mde_queries": mde(sd, len(diff), alpha, power),
                         "mde_seeds": mde_two_groups(sa, ra, sb, rb, alpha, power), "effect": effect,
                         "queries_needed": units_needed(sd, effect, alpha, power),
                         "seeds_needed": _seeds_needed(sa, ra, sb, rb, effect, against == reference, alpha, power)})
    return pd.DataFrame(rows, columns=cols)


def _seeds_needed(sa, ra, sb, rb, effect, against_reference, alpha, power) -> float:
    # A side with one seed has no estimate of its seed sd; the other side's stands in, unless it is the reference.
    if ra <= 1 and (rb <= 1 or against_reference):
        return math.nan
    sa = sa if ra > 1 else sb
    sb = sb if rb > 1 else sa
    return seeds_needed(sa, sb, effect, against_reference, alpha, power)
