"""Read a sweep's MLflow experiment into pandas frames: one row per trial run, plus the training curves.

The schema is the one the sweep driver writes (``tasb_ray.experiments``): runs tagged ``tasb.kind`` =
``trial`` / ``aggregate`` / ``summary``, trial runs grouped by ``tasb.group``, metric keys with ``_``
where the metric name has ``@`` (``final_test/nDCG_10``). Reading is tolerant: a missing metric is a
missing column or NaN, and the report says so instead of failing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from tasb_ray.errors import TasbRayError
from tasb_ray.tracking import FINISHED, GROUP_TAG, KIND_TAG, TRIAL_LABEL_TAGS, RunRecord, Tracker, default_tracking_uri

METRIC_PREFIXES = ("final_dev/", "final_test/", "pipeline/", "latency/", "plan/")
# The loss terms after the total: each is drawn when the trainer logged it (older runs have only some).
CURVE_METRICS = ("dev/nDCG_10", "train/loss", "train/loss_pair", "train/loss_inbatch", "train/loss_ratio",
                 "train/margin_sd_pair", "train/margin_sd_inbatch")
REQUIRED_CURVES = ("dev/nDCG_10", "train/loss")
# Knobs read from params (``grid.<knob>`` is the driver's copy of the grid values).
KNOBS = ("seed", "alpha", "clusters.k")


@dataclass
class SweepData:
    """A sweep as read from MLflow.

    Args:
        experiment: experiment name.
        experiment_id: its MLflow id.
        tracking_uri: where it was read from.
        trials: one row per trial run: ``run_id``, ``trial``, ``group``, ``status``, the knobs (``seed``,
            ``alpha``, ``clusters.k``, any other grid key; numbers where they parse) and the latest value
            of every final, pipeline and latency metric under its MLflow key.
        curves: long frame ``run_id, trial, group, status, metric, step, value`` for ``CURVE_METRICS``.
        knobs: the grid keys other than the seed, in the grid's order (from the summary run's ``grid``
            param, else the known knobs that vary across trials).
        summary: the summary run's ``run_id``, ``params`` and ``metrics``; None when there is none yet.
        reference: the untrained reference group (the summary run's ``reference`` param), listed last; None when
            the sweep had none.
    """

    experiment: str
    experiment_id: str
    tracking_uri: str
    trials: pd.DataFrame
    curves: pd.DataFrame
    knobs: list[str] = field(default_factory=list)
    summary: dict | None = None
    reference: str | None = None

    @property
    def baseline(self) -> str | None:
        return self.summary["params"].get("baseline") if self.summary else None

    @property
    def trained(self) -> pd.DataFrame:
        """The trial rows without the untrained reference (what the knob plots vary)."""
        return self.trials if self.reference is None else self.trials[self.trials["group"] != self.reference]

    @property
    def finished(self) -> pd.DataFrame:
        return self.trials[self.trials["status"] == FINISHED]

    def status_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.trials["status"].value_counts().sort_index().items()}


def _number(value: str):
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return int(f) if f.is_integer() and "." not in str(value) and "e" not in str(value).lower() else f


def _grid_keys(summary_params: dict) -> list[str] | None:
    try:
        grid = json.loads(summary_params.get("grid", ""))
    except (TypeError, ValueError):
        return None
    return [str(k) for k in grid] if isinstance(grid, dict) else None


def _trial_row(run: RunRecord) -> dict:
    tags, params, metrics = run.tags, run.params, run.metrics
    label = next((tags[t] for t in TRIAL_LABEL_TAGS if tags.get(t)), None) or run.name or run.run_id[:8]
    row = {"run_id": run.run_id, "trial": label, "group": tags.get(GROUP_TAG, "(no group)"), "status": run.status}
    for key, value in params.items():
        knob = key.removeprefix("grid.")
        # The resolved param and the grid copy agree; the grid copy only fills a gap.
        if (knob in KNOBS or key.startswith("grid.")) and (knob not in row or key == knob):
            row[knob] = _number(value)
    row.update({k: float(v) for k, v in metrics.items() if k.startswith(METRIC_PREFIXES)})
    return row


def _curves(tracker: Tracker, trials: pd.DataFrame, runs: dict[str, RunRecord]) -> pd.DataFrame:
    rows = []
    for t in trials.itertuples(index=False):
        present = runs[t.run_id].metrics
        for metric in CURVE_METRICS:
            if metric not in present:
                continue
            for step, value in tracker.metric_history(t.run_id, metric):
                rows.append({"run_id": t.run_id, "trial": t.trial, "group": t.group, "status": t.status,
                             "metric": metric, "step": step, "value": value})
    cols = ["run_id", "trial", "group", "status", "metric", "step", "value"]
    df = pd.DataFrame(rows, columns=cols)
    # A trial resumed from a checkpoint may log a step twice; the later value wins.
    return df.drop_duplicates(["run_id", "metric", "step"], keep="last").sort_values(
        ["metric", "group", "trial", "step"], kind="stable").reset_index(drop=True)


def collect_sweep(experiment: str, tracking_uri: str | None = None) -> SweepData:
    """Read every trial run of ``experiment`` (and its summary run) from the tracking store, read-only.

    Args:
        experiment: the experiment name (one per sweep).
        tracking_uri: the store; default ``default_tracking_uri()``.

    Raises:
        TasbRayError: unknown experiment, no runs, no trial runs, or no finished trial yet.
    """
    uri = tracking_uri or default_tracking_uri()
    tracker = Tracker(uri, read_only=True)
    try:
        experiment_id = tracker.experiment_id(experiment)
        if experiment_id is None:
            names = tracker.experiment_names()
            raise TasbRayError(f"no MLflow experiment named {experiment!r} at {uri}"
                               + (f" (experiments there: {', '.join(names)})" if names else ""))
        runs = tracker.runs(experiment_id)
        if not runs:
            raise TasbRayError(f"experiment {experiment!r} has no runs yet")
        trial_runs = [r for r in runs if r.tags.get(KIND_TAG) == "trial"]
        if not trial_runs:
            raise TasbRayError(f"experiment {experiment!r} has {len(runs)} run(s) but no trial runs "
                               f"(tag {KIND_TAG}=trial); is it a tasb-ray sweep?")
        trials = pd.DataFrame([_trial_row(r) for r in trial_runs])
        # Groups in the order their first trial started (the grid's order for the sweep driver), then by seed.
        rank = {g: i for i, g in enumerate(dict.fromkeys(trials["group"]))}
        trials["_rank"] = trials["group"].map(rank)
        sort = ["_rank", *[c for c in ("seed",) if c in trials.columns and pd.api.types.is_numeric_dtype(trials[c])]]
        trials = trials.sort_values(sort, kind="stable").drop(columns="_rank").reset_index(drop=True)
        n_finished = int((trials["status"] == FINISHED).sum())
        if n_finished == 0:
            counts = ", ".join(f"{v} {k.lower()}" for k, v in trials["status"].value_counts().sort_index().items())
            raise TasbRayError(f"experiment {experiment!r} has no finished trials yet ({counts})")
        curves = _curves(tracker, trials, {r.run_id: r for r in trial_runs})
        summaries = [r for r in runs if r.tags.get(KIND_TAG) == "summary"]
    finally:
        tracker.close()
    summary = None
    if summaries:
        s = summaries[-1]
        summary = {"run_id": s.run_id, "params": dict(s.params), "metrics": dict(s.metrics)}
    grid_keys = _grid_keys(summary["params"]) if summary else None
    reference = summary["params"].get("reference") if summary else None
    if reference is not None and (trials["group"] == reference).any():
        # The reference trial starts first (it is short); it is the yardstick, so it closes every table.
        last = trials["group"] == reference
        trials = pd.concat([trials[~last], trials[last]], ignore_index=True)
    else:
        reference = None
    if grid_keys is not None:
        knobs = [k for k in grid_keys if k != "seed"]
    else:
        rest = trials if reference is None else trials[trials["group"] != reference]
        knobs = [k for k in KNOBS if k != "seed" and k in rest.columns and rest[k].nunique() > 1]
    return SweepData(experiment, experiment_id, uri, trials, curves, knobs, summary, reference)
