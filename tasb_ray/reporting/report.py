"""The sweep report: read the experiment, derive the tables, draw the plots, write one HTML file.

Sections without data (no α variation, periodic dev evaluation off, no pipeline stage logged) are
left out of the page with a one-line note saying why, rather than drawn empty.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import write_text
from tasb_ray.reporting import frames, plots
from tasb_ray.reporting.collect import CURVE_METRICS, FINISHED, REQUIRED_CURVES, SweepData, collect_sweep
from tasb_ray.reporting.html import Plot, Section, Table, render_page
from tasb_ray.tracking import KIND_TAG, Tracker, check_sqlite_store

REPORT_NAME = "report.html"
SWEEP_KNOBS = ("alpha", "clusters.k")  # always get a section, with a note when they do not vary
KNOB_TITLES = {"alpha": "α (in-batch loss weight)", "clusters.k": "cluster count"}
CURVE_TABLE_POINTS = 25
# The reference's final metric drawn as a line on the curve of the same measure.
CURVE_REFERENCE = {"dev/nDCG_10": "final_dev/nDCG_10"}


def _reference_values(data: SweepData, metrics) -> dict[str, float]:
    """metric → the untrained reference's value (finished reference trial only)."""
    if data.reference is None:
        return {}
    ref = data.finished[data.finished["group"] == data.reference]
    return {m: float(ref[m].mean()) for m in metrics if m in ref.columns and ref[m].notna().any()}


def _answer_section(data: SweepData) -> Section | None:
    if data.summary is None:
        return None
    groups = list(dict.fromkeys(data.trials["group"]))
    table = frames.answer(data.summary["metrics"], groups, data.baseline, data.reference)
    if table.empty:
        return None
    against = " and against the untrained student (the reference group)" if data.reference else ""
    return Section("sec-answer", "The answer",
                   f"Each group against the baseline ({data.baseline}){against}, on the test queries: the mean "
                   "per-query difference with its 95% CI, the Holm-corrected p-values of the paired t-test and of the "
                   "paired randomization test (over every comparison and measure), and the smallest difference the "
                   "queries and the seeds at hand detect at 80% power (two-sided, α 0.05).",
                   tables=[Table("table-answer", table, "difference = group − against; an effect below mde_queries "
                                 "or mde_seeds is one this sweep cannot tell from noise.")])


def _trials_section(data: SweepData) -> Section:
    t = data.trials
    knobs = [k for k in ("seed", *dict.fromkeys([*SWEEP_KNOBS, *data.knobs])) if k in t.columns]
    finals = frames.present(t.columns, frames.FINAL_METRICS)
    frame = t[["run_id", "trial", "group", "status", *knobs, *finals]]
    counts = ", ".join(f"{n} {s}" for s, n in data.status_counts().items())
    notes = []
    bad = t[t["status"] != FINISHED]
    if len(bad):
        notes.append(f"{len(bad)} trial(s) did not finish ({', '.join(bad['trial'] + ': ' + bad['status'])}); "
                     "they are listed here, marked with a red × in the plots, and left out of every mean.")
    if not finals:
        notes.append("No final_dev/ or final_test/ metrics were logged.")
    return Section("sec-trials", "Trials", f"Every trial run of the experiment ({counts}).",
                   tables=[Table("table-trials", frame, "One row per trial run: knobs and final metrics "
                                 "(latest value of each MLflow metric).", digits=dict.fromkeys(knobs))], notes=notes)


def _plan_section(data: SweepData) -> Section | None:
    table = frames.plan_stats(data.trials)
    if table.empty:
        return None
    return Section("sec-plan", "Batch plan statistics",
                   "What the sampler's batch plan looked like in each group (plan/ metrics of the trials), e.g. the "
                   "share of single-cluster batches and of same-cluster pairs.",
                   tables=[Table("table-plan", table, "Mean over the finished trials of each group.")])


def _spread_section(data: SweepData) -> Section:
    metrics = [m for m in frames.FINAL_METRICS if m in data.trials.columns and data.finished[m].notna().any()]
    s = Section("sec-seed-spread", "Seed robustness per configuration",
                "How much the seed moves each final metric: one point per seed, a box when there are three or more, "
                "and mean ± sample sd beside it.")
    if not metrics:
        s.notes.append("No final metrics from finished trials; nothing to show.")
        return s
    reference = _reference_values(data, metrics)
    s.plots.append(Plot("plot-seed-spread", plots.seed_spread(data.trials, metrics, reference),
                        "Final metrics across seeds per configuration group. Red ×: failed or unfinished trial "
                        "(on the lower edge when it logged no value)."
                        + (" Dotted line: the untrained student." if reference else "")))
    s.tables.append(Table("table-seed-spread", frames.seed_spread(data.trials, metrics),
                          "Statistics over the finished trials of each group (sd: sample sd, ddof 1)."))
    return s


def _knob_section(data: SweepData, knob: str) -> Section:
    slug = plots.slug(knob)
    title = f"Metric vs {KNOB_TITLES.get(knob, knob)}"
    s = Section(f"sec-vs-{slug}", title)
    trials = data.trained
    values = frames.knob_values(trials, knob)
    if knob not in trials.columns:
        s.notes.append(f"Parameter {knob!r} was not logged by the trials; section omitted.")
        return s
    if len(values) < 2:
        shown = f" (all trials have {knob}={values[0]})" if values else ""
        s.notes.append(f"No variation in {knob}{shown}; plot omitted.")
        return s
    metrics = [m for m in frames.FINAL_METRICS if m.startswith("final_test/") and m in trials.columns]
    metrics = metrics or [m for m in frames.FINAL_METRICS if m in trials.columns]
    if not metrics:
        s.notes.append("No final metrics logged; plot omitted.")
        return s
    others = [k for k in data.knobs if k != knob]
    s.intro = (f"Each point is one seed; lines join the means (± sample sd) at each value of {knob}"
               + (", one line per setting of the other grid keys." if len(others) else "."))
    s.plots.append(Plot(f"plot-vs-{slug}", plots.knob_sweep(trials, knob, metrics, others),
                        f"Final test metrics against {knob}. Red ×: failed or unfinished trial."))
    s.tables.append(Table(f"table-vs-{slug}", frames.knob_sweep(trials, knob, metrics, others),
                          f"Statistics over finished seeds at each {knob} (failed: trials not finished).",
                          digits={knob: None}))
    return s


def _curves_section(data: SweepData) -> Section:
    s = Section("sec-training-curves", "Training curves",
                "Dev nDCG@10 (periodic evaluation), the training loss and each of its logged terms (pairwise and "
                "in-batch Margin-MSE, their ratio, the margin sds) against the optimizer step, one line per trial. "
                "Dashed with a red × at the end: failed or unfinished trial.")
    present = [m for m in CURVE_METRICS if (data.curves["metric"] == m).any()]
    for m in REQUIRED_CURVES:
        if m not in present:
            why = "periodic dev evaluation was off or has not run yet" if m.startswith("dev/") else "not logged"
            s.notes.append(f"No {m} history ({why}).")
    if not present:
        return s
    curves = data.curves[data.curves["metric"].isin(present)]
    values = _reference_values(data, CURVE_REFERENCE.values())
    reference = {c: values[f] for c, f in CURVE_REFERENCE.items() if f in values and c in present}
    s.plots.append(Plot("plot-training-curves", plots.training_curves(curves, present, reference),
                        "Metric history per trial (MLflow get_metric_history)."
                        + (" Dotted line: the untrained student's final dev nDCG@10." if reference else "")))
    thin, dropped = frames.thin_curves(curves, CURVE_TABLE_POINTS)
    thin = thin[["run_id", "trial", "metric", "step", "value"]]
    caption = "Metric history per trial"
    if dropped:
        caption += f" (at most {CURVE_TABLE_POINTS} evenly spaced steps per trial and metric; {dropped} rows left out)"
    s.tables.append(Table("table-training-curves", thin, caption + ".", digits={"value": 5}, collapsed=True))
    return s


def _recall_section(data: SweepData) -> Section:
    s = Section("sec-pipeline-recall", "Pipeline recall@k",
                "Recall on the test split against depth k for each retrieval pipeline (BM25, dense, fusion, re-rank); "
                "means over the finished trials of each group.")
    table = frames.pipeline_recall(data.trials)
    if table.empty or not any(c.startswith("R_") for c in table.columns):
        s.notes.append("No pipeline/<pipeline>/R_<k> metrics were logged; section omitted.")
        return s
    s.plots.append(Plot("plot-pipeline-recall", plots.pipeline_recall(table), "Recall@k per pipeline (log k)."))
    s.tables.append(Table("table-pipeline-recall", table, "Mean over finished trials per group and pipeline."))
    return s


def _latency_section(data: SweepData) -> Section:
    s = Section("sec-latency", "Per-stage latency",
                "p50 and p99 latency of each stage and of each pipeline end to end, averaged over finished trials.")
    table = frames.latency(data.trials)
    if table.empty:
        s.notes.append("No latency/<stage>/p50_ms or p99_ms metrics were logged; section omitted.")
        return s
    s.plots.append(Plot("plot-latency", plots.latency(table), "Latency per stage in milliseconds."))
    s.tables.append(Table("table-latency", table, "Mean over finished trials of each trial's latency quantiles; "
                          "p99_ms_max is the worst trial's p99.", digits={q: 2 for q in (*frames.QUANTILES, "p99_ms_max")}))
    return s


def _comparisons_section(data: SweepData) -> Section | None:
    if data.summary is None:
        return None
    table = frames.comparisons(data.summary["metrics"])
    if table.empty:
        return None
    return Section("sec-comparisons", "Paired comparisons",
                   "Paired tests between configuration groups over queries, from the summary run.",
                   tables=[Table("table-comparisons", table, "compare/<group>__vs__<baseline>/<metric> metrics "
                                 "of the summary run.")])


def build_sections(data: SweepData) -> list[Section]:
    """Every section of the report, in page order."""
    knobs = list(dict.fromkeys([*SWEEP_KNOBS, *[k for k in data.knobs if k in data.trained.columns
                                                and pd.api.types.is_numeric_dtype(data.trained[k])]]))
    sections = [_spread_section(data), *(_knob_section(data, k) for k in knobs), _curves_section(data),
                _plan_section(data), _recall_section(data), _latency_section(data), _comparisons_section(data),
                _trials_section(data)]
    return [s for s in sections if s is not None]


def render_report(data: SweepData, generated: str | None = None) -> str:
    """The report page for ``data`` as an HTML string."""
    meta = [("experiment", data.experiment), ("experiment id", data.experiment_id), ("tracking URI", data.tracking_uri),
            ("trials", ", ".join(f"{n} {s}" for s, n in data.status_counts().items())),
            ("groups", ", ".join(dict.fromkeys(data.trials["group"])))]
    if data.summary is not None:
        params = data.summary["params"]
        meta += [(k, params[k]) for k in ("sweep", "grid", "baseline", "reference") if k in params]
        meta.append(("summary run", data.summary["run_id"]))
    meta.append(("generated", generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")))
    answer = _answer_section(data)
    return render_page(f"tasb-ray sweep report: {data.experiment}", meta, build_sections(data),
                       lead=[answer] if answer else [])


def build_report(experiment: str, tracking_uri: str | None = None, out: str | os.PathLike = REPORT_NAME) -> Path:
    """Read ``experiment`` from MLflow and write its HTML report to ``out`` (atomically).

    Args:
        experiment: MLflow experiment name (one per sweep).
        tracking_uri: the MLflow store; default ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``.
        out: the HTML file to write.

    Raises:
        TasbRayError: the experiment is unknown, empty, or has no finished trial.
    """
    data = collect_sweep(experiment, tracking_uri)
    out = Path(out)
    write_text(out, render_report(data))
    return out


def find_summary_run(tracker: Tracker, experiment: str) -> str:
    """The run id of the experiment's (latest) summary run."""
    experiment_id = tracker.experiment_id(experiment)
    if experiment_id is None:
        raise TasbRayError(f"no MLflow experiment named {experiment!r}")
    runs = tracker.runs(experiment_id, "summary", oldest_first=False)
    if not runs:
        raise TasbRayError(f"experiment {experiment!r} has no summary run (tag {KIND_TAG}=summary) to attach the report to")
    return runs[0].run_id


def log_report(report: str | os.PathLike, tracking_uri: str, run_id: str | None = None,
               experiment: str | None = None) -> str:
    """Attach the report to an MLflow run as the artifact ``report.html``, viewable in the MLflow UI.

    The store must already be an MLflow store (it is written to, never created).

    Args:
        report: the HTML file (any name; it is logged as ``report.html``).
        tracking_uri: the MLflow store.
        run_id: the run to attach to; default the summary run of ``experiment``.
        experiment: used to find the summary run when ``run_id`` is not given.

    Returns:
        The run id the artifact was logged to.
    """
    report = Path(report)
    if not report.is_file():
        raise TasbRayError(f"{report}: no such report file")
    check_sqlite_store(tracking_uri, must_exist=True)
    tracker = Tracker(tracking_uri)
    if run_id is None:
        if experiment is None:
            raise TasbRayError("log_report needs run_id or experiment")
        run_id = find_summary_run(tracker, experiment)
    if report.name == REPORT_NAME:
        tracker.log_artifact(run_id, report)
    else:
        with tempfile.TemporaryDirectory(prefix="tasb-report-") as d:
            shutil.copyfile(report, Path(d) / REPORT_NAME)
            tracker.log_artifact(run_id, Path(d) / REPORT_NAME)
    return run_id
