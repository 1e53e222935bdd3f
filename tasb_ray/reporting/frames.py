"""The tables behind the report's plots, derived from the trial frame of ``collect.SweepData``.

Statistics over seeds use finished trials only; failed and unfinished trials are counted in a
``failed``/``not finished`` column so that they stay visible. The sd is the sample sd (ddof 1), as in
the sweep's own robustness tables, and 0 for a single value.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from tasb_ray.tracking import FAILED, FINISHED

MEASURES = ("nDCG_10", "MRR_10", "R_100", "R_1000")
FINAL_METRICS = tuple(f"final_{split}/{m}" for split in ("test", "dev") for m in MEASURES)
PIPELINES = ("bm25", "dense", "fusion-interp", "fusion-rrf", "rerank")
RECALL_DEPTHS = (10, 20, 50, 100, 200, 500, 1000)
STAGES = ("bm25", "dense-encode", "dense-search", "fusion-interp", "fusion-rrf", "rerank")
QUANTILES = ("p50_ms", "p99_ms", "mean_ms")
STATS = ("n", "mean", "sd", "min", "max")


def present(columns, wanted) -> list[str]:
    """The entries of ``wanted`` that are columns of a frame, in ``wanted``'s order."""
    have = set(columns)
    return [w for w in wanted if w in have]


def describe(values: pd.Series) -> dict[str, float]:
    """n, mean, sample sd, min and max of the non-missing values (NaN statistics when there are none)."""
    x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan}
    return {"n": n, "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if n > 1 else 0.0,
            "min": float(x.min()), "max": float(x.max())}


def _not_finished(trials: pd.DataFrame) -> pd.Series:
    return trials["status"] != FINISHED


def seed_spread(trials: pd.DataFrame, metrics) -> pd.DataFrame:
    """Per configuration group and metric: statistics over the finished trials (seeds), and how many failed.

    Args:
        trials: ``SweepData.trials``.
        metrics: metric columns to describe (those absent are skipped).
    """
    rows = []
    for metric in present(trials.columns, metrics):
        for group, part in trials.groupby("group", sort=False):
            done = part[part["status"] == FINISHED]
            rows.append({"group": group, "metric": metric, **describe(done[metric]),
                         "failed": int((part["status"] == FAILED).sum()),
                         "unfinished": int((~part["status"].isin([FINISHED, FAILED])).sum())})
    return pd.DataFrame(rows, columns=["group", "metric", *STATS, "failed", "unfinished"])


def knob_values(trials: pd.DataFrame, knob: str) -> list:
    """The distinct recorded values of ``knob`` over all trials, sorted."""
    if knob not in trials.columns:
        return []
    values = trials[knob].dropna().unique().tolist()
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def series_label(trials: pd.DataFrame, knob: str, others) -> pd.Series:
    """``k=v`` labels of the other varied knobs, one per trial (empty when nothing else varies)."""
    cols = [k for k in others if k != knob and k in trials.columns and trials[k].nunique(dropna=True) > 1]
    if not cols:
        return pd.Series([""] * len(trials), index=trials.index, dtype=object)
    return trials[cols].astype(str).apply(lambda r: ",".join(f"{k}={v}" for k, v in zip(cols, r)), axis=1)


def knob_sweep(trials: pd.DataFrame, knob: str, metrics, others=()) -> pd.DataFrame:
    """Statistics over seeds of each metric at each value of ``knob``, one series per setting of the other knobs.

    Args:
        trials: ``SweepData.trials``.
        knob: the swept parameter (e.g. ``alpha``).
        metrics: metric columns.
        others: the other grid knobs; a series is one combination of those that vary.
    """
    cols = [knob, "series", "metric", *STATS, "failed"]
    if knob not in trials.columns:
        return pd.DataFrame(columns=cols)
    t = trials[trials[knob].notna()].assign(series=lambda d: series_label(d, knob, others))
    rows = []
    for metric in present(t.columns, metrics):
        for (value, series), part in t.groupby([knob, "series"], sort=True):
            done = part[part["status"] == FINISHED]
            rows.append({knob: value, "series": series, "metric": metric, **describe(done[metric]),
                         "failed": int(_not_finished(part).sum())})
    return pd.DataFrame(rows, columns=cols)


def _pipelines(columns) -> list[str]:
    found = {m.group(1) for c in columns if (m := re.fullmatch(r"pipeline/([^/]+)/R_\d+", c))}
    return [p for p in PIPELINES if p in found] + sorted(found - set(PIPELINES))


def recall_depths(columns, pipeline: str) -> list[int]:
    found = {int(m.group(1)) for c in columns if (m := re.fullmatch(rf"pipeline/{re.escape(pipeline)}/R_(\d+)", c))}
    return sorted(found)


def pipeline_recall(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean over finished trials of each pipeline's recall at every logged depth, nDCG@10 and MRR@10, per group.

    Columns: ``group, pipeline, n`` then ``R_<k>`` (ascending k), ``nDCG_10``, ``MRR_10``.
    """
    done = trials[trials["status"] == FINISHED]
    pipes = _pipelines(trials.columns)
    depths = sorted({k for p in pipes for k in recall_depths(trials.columns, p)})
    measures = [f"R_{k}" for k in depths] + ["nDCG_10", "MRR_10"]
    rows = []
    for group, part in done.groupby("group", sort=False):
        for p in pipes:
            keys = {m: f"pipeline/{p}/{m}" for m in measures}
            have = part[[c for c in keys.values() if c in part.columns]].notna().any(axis=1)
            if not have.any():
                continue
            row = {"group": group, "pipeline": p, "n": int(have.sum())}
            row.update({m: (float(part[k].mean()) if k in part.columns and part[k].notna().any() else math.nan)
                        for m, k in keys.items()})
            rows.append(row)
    return pd.DataFrame(rows, columns=["group", "pipeline", "n", *measures])


def _stages(columns) -> list[str]:
    found = {m.group(1) for c in columns if (m := re.fullmatch(r"latency/(.+)/(?:p50|p99|mean)_ms", c))}
    stages = [s for s in STAGES if s in found]
    pipes = [f"pipeline:{p}" for p in PIPELINES if f"pipeline:{p}" in found]
    return stages + pipes + sorted(found - set(stages) - set(pipes))


def latency(trials: pd.DataFrame) -> pd.DataFrame:
    """Per stage (and pipeline total): the mean over finished trials of each trial's p50, p99 and mean latency.

    Columns: ``stage, kind`` (``stage`` or ``pipeline``), ``n``, ``p50_ms``, ``p99_ms``, ``mean_ms``,
    ``p99_ms_max`` (the worst trial's p99).
    """
    done = trials[trials["status"] == FINISHED]
    rows = []
    for stage in _stages(trials.columns):
        keys = {q: f"latency/{stage}/{q}" for q in QUANTILES}
        cols = [k for k in keys.values() if k in done.columns]
        n = int(done[cols].notna().any(axis=1).sum()) if cols else 0
        if n == 0:
            continue
        row = {"stage": stage, "kind": "pipeline" if stage.startswith("pipeline:") else "stage", "n": n}
        for q, k in keys.items():
            row[q] = float(done[k].mean()) if k in done.columns and done[k].notna().any() else math.nan
        p99 = keys["p99_ms"]
        row["p99_ms_max"] = float(done[p99].max()) if p99 in done.columns and done[p99].notna().any() else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["stage", "kind", "n", *QUANTILES, "p99_ms_max"])


def thin_curves(curves: pd.DataFrame, max_points: int) -> tuple[pd.DataFrame, int]:
    """At most ``max_points`` evenly spaced steps per (trial, metric), always keeping the first and last.

    Returns the thinned frame and how many rows were left out.
    """
    if curves.empty:
        return curves, 0
    keep = []
    for _, part in curves.groupby(["run_id", "metric"], sort=False):
        if len(part) <= max_points:
            keep.append(part)
        else:
            idx = np.unique(np.linspace(0, len(part) - 1, max_points).round().astype(int))
            keep.append(part.iloc[idx])
    out = pd.concat(keep).sort_values(["metric", "group", "trial", "step"], kind="stable")
    return out.reset_index(drop=True), len(curves) - len(out)


COMPARE_STATS = ("mean_diff", "ci95_low", "ci95_high", "sd_diff", "effect_size", "p_value", "p_perm", "p_holm",
                 "p_perm_holm", "mde_queries", "mde_seeds", "queries", "seeds_a", "seeds_b")
_COMPARE_KEY = re.compile(r"compare/(.+?)__vs__(.+?)/(.+)/(" + "|".join(COMPARE_STATS) + ")")


def comparisons(summary_metrics: dict[str, float]) -> pd.DataFrame:
    """The summary run's paired comparisons, ``compare/<A>__vs__<B>/<metric>/<stat>``, one row per (A, B, metric).

    Columns ``group, baseline, metric`` then the statistics of :data:`COMPARE_STATS` that were logged (older sweeps
    logged only ``mean_diff``, ``effect_size`` and ``p_value``).
    """
    rows: dict[tuple, dict] = {}
    for key, value in summary_metrics.items():
        m = _COMPARE_KEY.fullmatch(key)
        if m:
            rows.setdefault(m.groups()[:3], {})[m.group(4)] = float(value)
    logged = {stat for r in rows.values() for stat in r}
    stats = [s for s in ("mean_diff", "effect_size", "p_value") if s in logged or not rows] + [
        s for s in COMPARE_STATS if s in logged and s not in ("mean_diff", "effect_size", "p_value")]
    cols = ["group", "baseline", "metric", *stats]
    out = [{"group": g, "baseline": b, "metric": metric, **st} for (g, b, metric), st in sorted(rows.items())]
    return pd.DataFrame(out, columns=cols)


def mlflow_name(label: str) -> str:
    """A group label as the sweep driver writes it into metric keys (``experiments.grid.safe_name``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "all"


def answer(summary_metrics: dict[str, float], groups, baseline: str | None, reference: str | None) -> pd.DataFrame:
    """The report's opening table: each group against the baseline and against the untrained reference.

    One row per (group, against, measure) with the mean difference, its 95% CI, the Holm-corrected p-values of the
    t-test and the randomization test, and the minimum detectable effects over queries and over seeds. Group names
    are the sweep's labels (``groups``), matched to the summary run's metric keys.
    """
    cols = ["group", "against", "measure", "difference", "ci95_low", "ci95_high", "p_holm", "p_perm_holm",
            "mde_queries", "mde_seeds"]
    table = comparisons(summary_metrics)
    if table.empty:
        return pd.DataFrame(columns=cols)
    names = {mlflow_name(g): g for g in groups}
    against = [mlflow_name(g) for g in (baseline, reference) if g]
    rows = []
    for r in table.to_dict("records"):
        if against and r["baseline"] not in against:
            continue
        rows.append({"group": names.get(r["group"], r["group"]), "against": names.get(r["baseline"], r["baseline"]),
                     "measure": r["metric"], "difference": r.get("mean_diff", math.nan),
                     **{c: r.get(c, math.nan) for c in cols[4:]}})
    out = pd.DataFrame(rows, columns=cols)
    # Against the baseline first, then against the reference; groups in the sweep's order.
    order = {g: i for i, g in enumerate(groups)}
    out["_a"] = (out["against"] != (baseline or "")).astype(int)
    out["_g"] = out["group"].map(order).fillna(len(order))
    out["_m"] = out["measure"].map({m: i for i, m in enumerate(MEASURES)}).fillna(len(MEASURES))
    return out.sort_values(["_a", "_g", "_m"], kind="stable").drop(columns=["_a", "_g", "_m"]).reset_index(drop=True)


def plan_stats(trials: pd.DataFrame) -> pd.DataFrame:
    """Mean over each group's finished trials of every ``plan/...`` metric (the batch plan's statistics)."""
    keys = sorted(c for c in trials.columns if c.startswith("plan/"))
    done = trials[trials["status"] == FINISHED]
    rows = []
    for group, part in done.groupby("group", sort=False):
        if keys and part[keys].notna().any(axis=None):
            rows.append({"group": group, "n": int(part[keys].notna().any(axis=1).sum()),
                         **{k.removeprefix("plan/"): float(part[k].mean()) for k in keys}})
    return pd.DataFrame(rows, columns=["group", "n", *(k.removeprefix("plan/") for k in keys)])
