"""The sweep driver: shared stages once, one Tune trial per grid point, MLflow runs, robustness statistics.

Order matters: the MLflow experiment (and with it a fresh SQLite database) is created before Ray or any
trial starts; the shared stages (data, scored candidate pairs, teacher vectors, clusters per k) are built
once through the Ray Data pipelines and cached; trials only read them (``require_cached``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import ray
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

from tasb_ray.config import flatten, to_dict
from tasb_ray.data.prepare import cache_root
from tasb_ray.distributed.ray_data import trial_bundles
from tasb_ray.distributed.runtime import cluster_cpus_gpus, init_ray, node_resources
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.evaluation.corpus_index import CorpusIndexOptions
from tasb_ray.experiments.callback import MlflowTrials
from tasb_ray.experiments.config import SweepConfig
from tasb_ray.experiments.grid import (
    TrialSpec,
    base_training_dict,
    baseline_group,
    check_grid,
    safe_name,
    trial_training_config,
)
from tasb_ray.experiments.records import git_commit
from tasb_ray.experiments.reference import REFERENCE_GROUP, UNTRAINED, reference_spec
from tasb_ray.experiments.robustness import compare_groups, comparisons_table, group_summary, robustness_table
from tasb_ray.tables import markdown_table
from tasb_ray.experiments.shipping import pack
from tasb_ray.experiments.trial import FINAL_MARKER, PER_QUERY, tune_trial
from tasb_ray.fileio import write_parquet, write_text
from tasb_ray.pipeline.context import open_data
from tasb_ray.pipeline.run import prepare_shared_stages
from tasb_ray.reporting import build_report
from tasb_ray.tracking import GROUP_TAG, KIND_TAG, SWEEP_TAG, Tracker, metric_key, resolve_tracking_uri

log = logging.getLogger(__name__)

# Ray's socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes.
MAX_RAY_TEMP_LEN = 45
TABLE_METRICS = ("final_test/nDCG@10", "final_test/R@100", "final_dev/nDCG@10")
# Logged per comparison to the summary run as compare/<group>__vs__<baseline>/<measure>/<stat>.
COMPARISON_STATS = ("mean_diff", "ci95_low", "ci95_high", "sd_diff", "p_value", "p_perm", "p_holm", "p_perm_holm",
                    "effect_size", "mde_queries", "mde_seeds", "queries", "seeds_a", "seeds_b", "p_seeds", "p_seeds_holm")
PIPELINE_METRICS = ("nDCG@10", "MRR@10", "R@100", "R@1000")
# Paths differ per machine and per trial; they are not part of what a trial is.
NOT_PARAMS = ("output_dir", "work_dir", "data.cache_dir", "progress")


@dataclass
class SweepResult:
    run_dir: Path
    tracking_uri: str
    experiment: str
    experiment_id: str
    trials: pd.DataFrame                   # key, group, status, error, final metrics
    summary: pd.DataFrame                  # group, metric, mean, sd, min, max, ci95_low, ci95_high, n
    comparisons: pd.DataFrame
    tables: dict[str, str] = field(default_factory=dict)   # name -> markdown


def ray_temp_dir(run_dir: Path) -> Path:
    """``<run_dir>/ray``, or a short directory in the system temp dir linked from there when the path is too long."""
    wanted = run_dir / "ray"
    if len(str(wanted)) <= MAX_RAY_TEMP_LEN:
        return wanted
    short = Path(tempfile.gettempdir()) / f"tasb-ray-{hashlib.sha256(str(run_dir).encode()).hexdigest()[:8]}"
    short.mkdir(parents=True, exist_ok=True)
    if not wanted.is_symlink() and not wanted.exists():
        wanted.symlink_to(short, target_is_directory=True)
    return short


def trial_name(trial) -> str:
    return trial.config["trial"]["key"]


def trial_dirname(trial) -> str:
    return f"{safe_name(trial.config['trial']['key'])[:80]}_{trial.trial_id}"


def _absolute_locations(base: dict, run_dir: Path) -> dict:
    """Pin the shared locations to absolute paths: trials run in their own working directories."""
    base = dict(base)
    base["work_dir"] = str(Path(base.get("work_dir") or run_dir / "work").expanduser().resolve())
    data = dict(base.get("data") or {})
    data["cache_dir"] = str(cache_root(data.get("cache_dir")).resolve())
    base["data"] = data
    return base


def trial_params(cfg_dict: dict, trial: TrialSpec) -> dict:
    flat = {k: v for k, v in flatten(cfg_dict).items() if k not in NOT_PARAMS}
    return {**flat, **{f"grid.{k}": v for k, v in trial.values.items()}}


def prepare_shared(configs: dict, use_ray: bool, say: Callable[[str], None], eval_workers: int = 0) -> dict[str, Path]:
    """Shared stages for every distinct trial config (cached stages make repeats cheap); returns the paths."""
    paths: dict[str, Path] = {}
    on_ray = []
    for cfg in configs.values():  # before any stage is built: the corpus size needs only the prepared data
        on_ray.append(check_trial_eval(cfg, open_data(cfg).manifest["counts"]["corpus"], eval_workers))
    if eval_workers and not any(on_ray):
        say(f"note: resources.eval_workers {eval_workers} reserves encoder bundles with every trial, but no trial "
            "evaluates on Ray Data (corpus below eval.ray_min_passages): they stay idle; set it to 0")
    for key, cfg in configs.items():
        info = prepare_shared_stages(cfg, use_ray=use_ray)
        for name, value in info.items():
            path = value["path"] if isinstance(value, dict) else value
            paths[f"{name}:{path}"] = Path(path)
    say(f"shared stages ready: {len(paths)} (cached under the work directory)")
    return paths


def check_trial_eval(cfg, passages: int, eval_workers: int = 0) -> bool:
    """Refuse, before any trial trains, a sweep whose trials would evaluate on Ray Data without encoder bundles.

    Inside a Tune trial that path's encoder pool and read tasks must run in the trial's placement group
    (``resources.eval_workers``): on the cluster's free CPUs they wait for CPUs the trials hold (tried: two 1-CPU
    trials on 2 CPUs waited at their final evaluation until stopped). A clear error at the start beats a sweep
    that hangs at the end. Returns whether the trials evaluate on Ray Data.
    """
    on_ray = CorpusIndexOptions.from_eval(cfg.eval).on_ray(passages)
    if on_ray and eval_workers < 1:
        raise ConfigError(f"resources.eval_workers: the corpus has {passages} passages (>= eval.ray_min_passages "
                          f"{cfg.eval.ray_min_passages}), so every trial evaluates on Ray Data and must reserve its "
                          f"encoder actors: set resources.eval_workers >= 1, or eval.ray_min_passages above "
                          f"{passages} to evaluate in each trial's process")
    return on_ray


def trial_resources(cpus: float, gpus: float, eval_workers: int):
    """What ``tune.with_resources`` gets: a plain request, or a placement group with the trial's encoder bundles.

    STRICT_PACK: the encoder's read tasks open the trial's own (shipped or shared) files by path, so every bundle
    is on the trial's node.
    """
    if eval_workers <= 0:
        return {"cpu": cpus, "gpu": gpus}
    return tune.PlacementGroupFactory(trial_bundles(cpus, gpus, eval_workers), strategy="STRICT_PACK")


def describe_resources(resources) -> str:
    if isinstance(resources, dict):
        return str(resources)
    return f"placement group {resources.bundles} ({resources.strategy}: trainer, encoder actors, reader)"


def _ship(sweep: SweepConfig) -> bool:
    if sweep.ray.ship_shared != "auto":
        return sweep.ray.ship_shared == "always"

    return len([n for n in ray.nodes() if n.get("Alive")]) > 1


def build_bundle(paths: dict[str, Path], work_dir: Path):
    roots = {}
    for path in paths.values():
        if path.is_relative_to(work_dir):
            roots[f"work/{path.relative_to(work_dir)}"] = path
        elif (path / "manifest.json").is_file():
            roots["dataset"] = path
    return pack(roots)


def concurrency_line(configured: int | None, limit: int | None, gpus_per_trial: float, cluster_gpus: float) -> str:
    """The driver's log line saying how many trials may run at once and why."""
    if gpus_per_trial <= 0:
        return (f"max concurrent trials: {configured} (configured)" if configured
                else "max concurrent trials: as many as the CPUs allow")
    line = f"max concurrent trials: {limit} ({cluster_gpus:g} GPU(s) / {gpus_per_trial:g} per trial"
    if configured is not None and configured != limit:
        line += f"; resources.max_concurrent_trials {configured} " + ("capped" if configured > limit else "is lower")
    return line + ")"


def run_sweep(sweep: SweepConfig, *, fresh: bool = False, say: Callable[[str], None] = print) -> SweepResult:
    """Run (or continue) the sweep and return its trials and statistics.

    Args:
        sweep: the sweep configuration.
        fresh: start the Tune experiment anew even if ``<run_dir>/tune`` holds one (the default continues it
            with ``Tuner.restore``: finished trials are kept, unfinished and errored ones resume).
        say: progress lines for the user.
    """
    run_dir = sweep.resolved_run_dir()
    base = _absolute_locations(base_training_dict(sweep), run_dir)
    trials = check_grid(sweep, base)
    baseline = baseline_group(sweep, trials)
    reference = reference_spec(trials, baseline) if sweep.reference else None
    groups = {t.key: t.group for t in trials}
    if reference is not None:
        groups[reference[0].key] = reference[0].group
    # Only a sweep whose grid resolves gets a run directory: a typo leaves nothing behind.
    run_dir.mkdir(parents=True, exist_ok=True)

    uri = resolve_tracking_uri(sweep.mlflow.tracking_uri, run_dir)
    experiment = sweep.mlflow.experiment or sweep.name
    experiment_id = Tracker(uri).ensure_experiment(experiment, run_dir / "mlartifacts")
    commit = git_commit()
    os.environ["TASB_RAY_GIT_COMMIT"] = commit   # trials and Ray jobs may not see the git checkout
    say(f"sweep {sweep.name}: {len(trials)} trials in {len(set(groups.values()))} group(s); run dir {run_dir}")
    say(f"MLflow: {uri} (experiment {experiment!r})")

    started = init_ray(sweep.ray.address, sweep.ray.num_cpus, temp_dir=ray_temp_dir(run_dir),
                       num_gpus=sweep.ray.num_gpus)
    try:
        r = sweep.resources
        cpus, gpus = cluster_cpus_gpus()
        # Checked before the shared stages: a sweep that can never place a trial should fail in seconds.
        want_gpu, max_concurrent = r.concurrency(cpus, gpus)
        r.check_group(node_resources(), want_gpu)
        configs = {t.key: trial_training_config(base, t, f"{sweep.name}/{t.key}") for t in trials}
        specs = list(trials)
        if reference is not None:
            ref, source = reference
            configs[ref.key] = trial_training_config(base, source, f"{sweep.name}/{ref.key}", extra=UNTRAINED)
            specs.insert(0, ref)   # first: it is short, and runs beside the first training trial
        shared_paths = prepare_shared(configs, use_ray=True, say=say, eval_workers=r.eval_workers)
        bundle = build_bundle(shared_paths, Path(base["work_dir"])) if _ship(sweep) else None

        resources = trial_resources(r.cpus_per_trial, want_gpu, r.eval_workers)
        say(f"trial resources: {describe_resources(resources)} (cluster: {cpus:g} CPUs, {gpus:g} GPUs)")
        say(concurrency_line(r.max_concurrent_trials, max_concurrent, want_gpu, gpus))

        payloads = []
        for t in specs:
            cfg_dict = to_dict(configs[t.key])
            cfg_dict["output_dir"] = None
            payloads.append({"key": t.key, "values": t.values, "group": t.group, "training": cfg_dict,
                             "pipelines": to_dict(sweep.pipelines), "fault": to_dict(sweep.fault),
                             "run_dir": str(run_dir), "threads": max(1, int(r.cpus_per_trial)),
                             "eval_workers": r.eval_workers})
        params = {p["key"]: trial_params(p["training"], TrialSpec(p["values"], p["key"], p["group"]))
                  for p in payloads}

        trainable = tune.with_resources(tune.with_parameters(tune_trial, shared=bundle), resources)
        storage = run_dir / "tune"
        exp_path = storage / safe_name(sweep.name)
        # Tune's automatic TensorBoard logger renames every '@' metric with a warning per trial and step;
        # MLflow is the record here, so keep only the CSV and JSON result files beside it.
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        if not fresh and tune.Tuner.can_restore(str(exp_path)):
            say(f"continuing the Tune experiment at {exp_path}")
            tuner = tune.Tuner.restore(str(exp_path), trainable, resume_unfinished=True, resume_errored=True)
        else:
            callback = MlflowTrials(uri, experiment_id, sweep.name, params, groups, commit)
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search(payloads)},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent,
                                            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(name=safe_name(sweep.name), storage_path=str(storage),
                                          callbacks=[callback, CSVLoggerCallback(), JsonLoggerCallback()],
                                          failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1))
        grid = tuner.fit()
        if interrupted(grid):
            # Tune returns from fit() on Ctrl-C / SIGTERM with its state saved and trials left to run: aggregating
            # would write tables that look complete (and trials never started have no config). A rerun continues.
            raise KeyboardInterrupt
        result = aggregate(grid, sweep, run_dir, uri, experiment_id, experiment, groups, baseline)
    finally:
        if started:
            ray.shutdown()
    return result


def interrupted(grid) -> bool:
    """True when Tune stopped with trials still pending, running or paused (Ctrl-C, SIGTERM), not all ended."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None)
    if trials is not None:
        return any(t.status in ("PENDING", "RUNNING", "PAUSED") for t in trials)
    return any(res.config is None for res in grid)  # a trial that never reported: not run


def _collect(grid) -> tuple[pd.DataFrame, dict[str, dict[str, float]], pd.DataFrame]:
    """Per trial: status and final metrics (from the final checkpoint); the per-query table of finished trials."""
    rows, metrics, per_query = [], {}, []
    for res in grid:
        trial = res.config["trial"]
        row = {"key": trial["key"], "group": trial["group"], **{f"grid.{k}": v for k, v in trial["values"].items()}}
        final = None
        if res.error is None and res.checkpoint is not None:
            with res.checkpoint.as_directory() as d:
                d = Path(d)
                if (d / FINAL_MARKER).is_file():
                    final = json.loads((d / FINAL_MARKER).read_text())
                    pq = pd.read_parquet(d / PER_QUERY)
                    pq.insert(0, "trial", trial["key"])
                    pq.insert(0, "group", trial["group"])
                    per_query.append(pq)
        if final is None:
            row.update(status="FAILED", error=str(res.error).splitlines()[0][:300] if res.error else "no final result")
        else:
            row.update(status="FINISHED", error="", plan_hash=final.get("plan_hash", ""), node=final.get("node_id", ""))
            row.update(final.get("placement") or {})
            values = {k: v for k, v in final["metrics"].items() if "/" in k}
            metrics[trial["key"]] = values
            row.update(values)
        rows.append(row)
    pq = pd.concat(per_query, ignore_index=True) if per_query else pd.DataFrame(
        columns=["group", "trial", "split", "query_id", "measure", "value"])
    return pd.DataFrame(rows), metrics, pq


def pipeline_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean ± sd over seeds of each pipeline's metrics and latency, one row per (group, pipeline)."""
    rows = []
    pipes = sorted({m.split("/")[1] for m in summary["metric"] if m.startswith("pipeline/")})
    for group, part in summary.groupby("group", sort=False):
        by_metric = part.set_index("metric")
        for p in pipes:
            row = {"configuration": group, "pipeline": p}
            for m in PIPELINE_METRICS:
                key = f"pipeline/{p}/{m}"
                if key in by_metric.index:
                    r = by_metric.loc[key]
                    row[m] = f"{r['mean']:.4f} ± {r['sd']:.4f}"
            for q in ("p50_ms", "p99_ms"):
                key = f"latency/pipeline:{p}/{q}"
                if key in by_metric.index:
                    row[f"latency {q.removesuffix('_ms')} (ms)"] = f"{by_metric.loc[key]['mean']:.1f}"
            rows.append(row)
    return pd.DataFrame(rows)


def aggregate(grid, sweep: SweepConfig, run_dir: Path, uri: str, experiment_id: str, experiment: str,
              groups: dict[str, str], baseline: str) -> SweepResult:
    """Robustness statistics per group and paired tests against the baseline; aggregate and summary MLflow runs."""
    trials, metrics, per_query = _collect(grid)
    reference = REFERENCE_GROUP if REFERENCE_GROUP in groups.values() else None
    if reference is not None:
        # It runs first, but closes every table: it is what the groups are measured against.
        trials = pd.concat([trials[trials["group"] != reference], trials[trials["group"] == reference]],
                           ignore_index=True)
        metrics = {k: metrics[k] for k in sorted(metrics, key=lambda k: groups[k] == reference)}
    summary = group_summary(metrics, groups)
    test_pq = per_query[per_query["split"] == sweep.pipelines.split] if not per_query.empty else per_query
    comparisons = compare_groups(test_pq, baseline, sweep.compare_metrics, reference=reference)
    robust = robustness_table(summary, TABLE_METRICS) if not summary.empty else pd.DataFrame()
    pipes = pipeline_table(summary) if not summary.empty else pd.DataFrame()
    tables = {"robustness": markdown_table(robust), "comparisons": markdown_table(comparisons_table(comparisons)),
              "pipelines": markdown_table(pipes), "trials": markdown_table(trials[["key", "group", "status"]])}

    out = run_dir / "results"
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "robustness.csv", index=False)
    write_parquet(out / "per_query.parquet", per_query)   # what experiments/power.py plans from
    comparisons.to_csv(out / "comparisons.csv", index=False)
    trials.to_csv(out / "trials.csv", index=False)
    for name, md in tables.items():
        write_text(out / f"{name}.md", md)

    tracker = Tracker(uri)
    _replace_runs(tracker, experiment_id)
    group_values = {r.config["trial"]["group"]: r.config["trial"]["values"] for r in grid}
    aggregate_run_ids = []
    for group in dict.fromkeys(groups.values()):
        part = summary[summary["group"] == group]
        finished = trials[(trials["group"] == group) & (trials["status"] == "FINISHED")]
        run_id = tracker.create_run(experiment_id, f"aggregate {group}",
                                    tags={KIND_TAG: "aggregate", GROUP_TAG: group, SWEEP_TAG: sweep.name})
        aggregate_run_ids.append(run_id)
        # The reference row has no seed, so the column is float: 0.0 → "0".
        seeds = [str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
                 for v in finished.get("grid.seed", pd.Series(dtype=object)).dropna().tolist()]
        values = group_values.get(group, {})
        tracker.log_params(run_id, {**{k: v for k, v in values.items() if k != "seed"},
                                             "n_trials": int((trials["group"] == group).sum()),
                                             "n_finished": len(finished), "seeds": ",".join(seeds)})
        agg = {f"{metric_key(r.metric)}/{s}": float(getattr(r, s)) for r in part.itertuples()
               for s in ("mean", "sd", "min", "max", "ci95_low", "ci95_high", "n") if pd.notna(getattr(r, s))}
        tracker.log_metrics(run_id, agg)
        write_text(out / "groups" / f"{safe_name(group)}.md", markdown_table(robustness_table(part, TABLE_METRICS)))
        tracker.log_artifact(run_id, out / "groups" / f"{safe_name(group)}.md")
        tracker.finish(run_id)

    summary_run_id = tracker.create_run(experiment_id, f"summary {sweep.name}",
                                        tags={KIND_TAG: "summary", SWEEP_TAG: sweep.name})
    tracker.log_params(summary_run_id, {"sweep": sweep.name, "grid": json.dumps(sweep.grid), "baseline": baseline,
                                         "compare_metrics": ",".join(sweep.compare_metrics),
                                         **({"reference": reference} if reference else {})})
    comp = {}
    for r in comparisons.to_dict("records"):
        prefix = f"compare/{safe_name(r['group'])}__vs__{safe_name(r['baseline'])}/{metric_key(r['measure'])}"
        comp.update({f"{prefix}/{stat}": r[stat] for stat in COMPARISON_STATS if pd.notna(r[stat])})
    tracker.log_metrics(summary_run_id, comp)
    for name in ("robustness.csv", "comparisons.csv", "trials.csv", "robustness.md", "comparisons.md",
                 "pipelines.md"):
        tracker.log_artifact(summary_run_id, out / name)
    report = _report(uri, experiment, out / "report.html")
    if report is not None:
        # Beside the robustness tables of the summary run and of every aggregate run, so it opens from either.
        for run_id in (summary_run_id, *aggregate_run_ids):
            tracker.log_artifact(run_id, report)
    tracker.finish(summary_run_id)
    if (trials["status"] != "FINISHED").any():
        log.warning("%d trial(s) failed: %s", int((trials["status"] != "FINISHED").sum()),
                    ", ".join(trials.loc[trials["status"] != "FINISHED", "key"]))
    return SweepResult(run_dir, uri, experiment, experiment_id, trials, summary, comparisons, tables)


def _replace_runs(tracker: Tracker, experiment_id: str) -> None:
    """Aggregate and summary runs are recomputed from all trials each time; older ones are deleted."""
    for kind in ("aggregate", "summary"):
        for run in tracker.runs(experiment_id, kind):
            tracker.delete_run(run.run_id)


def _report(uri: str, experiment: str, path: Path) -> Path | None:
    """The HTML report of the sweep (``tasb-ray report``), when the reporting package is available."""
    try:
        build_report(experiment, tracking_uri=uri, out=path)
    except TasbRayError as e:
        log.warning("report not written: %s", e)
        return None
    return path
