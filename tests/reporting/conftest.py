"""A fake sweep written straight into an MLflow store, in the schema the sweep driver writes.

``write_fake_sweep`` is the one builder; the session fixture ``sweep_store`` writes several
experiments into one SQLite database once (creating the schema costs seconds), and the tests read them.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from report_fixture import ALPHA_FAILED, SEEDS_FAILED

MEASURES = ("nDCG_10", "MRR_10", "R_100", "R_1000")
PIPELINES = ("bm25", "dense", "fusion-interp", "fusion-rrf", "rerank")
DEPTHS = (10, 20, 50, 100, 200, 500, 1000)
STAGES = ("bm25", "dense-encode", "dense-search", "fusion-interp", "fusion-rrf", "rerank",
          *(f"pipeline:{p}" for p in PIPELINES))


@dataclass
class FakeTrial:
    key: str
    group: str
    status: str
    run_id: str
    params: dict
    metrics: dict = field(default_factory=dict)   # latest value per key
    history: dict = field(default_factory=dict)   # key -> [(step, value)]


@dataclass
class FakeSweep:
    experiment: str
    experiment_id: str
    trials: list[FakeTrial]
    summary_run_id: str | None = None

    def trial(self, key: str) -> FakeTrial:
        return next(t for t in self.trials if t.key == key)


def _group_label(values: dict) -> str:
    return ",".join(f"{k}={values[k]}" for k in sorted(values))


def _final_value(rng, values: dict, seed: int, measure: str) -> float:
    # A peak at alpha 0.75 and k 20, plus seed noise: something for the plots to show.
    base = {"nDCG_10": 0.55, "MRR_10": 0.5, "R_100": 0.85, "R_1000": 0.95}[measure]
    alpha = float(values.get("alpha", 0.75))
    k = float(values.get("clusters.k", 20))
    base -= 0.05 * (alpha - 0.75) ** 2 + 0.01 * abs(np.log(k / 20))
    if values.get("sampler.sampling") == "tasb":
        base += 0.02
    return float(np.clip(base + rng.normal(0, 0.01), 0, 1))


def write_fake_sweep(tracking_uri: str, experiment: str, grid: dict | None = None, failed=(), running=(),
                     steps: int = 40, dev_every: int | None = 10, pipelines: bool = True,
                     artifact_dir: Path | None = None, summary: bool = True, reference: bool = False,
                     loss_terms: bool = False, plan: bool = False) -> FakeSweep:
    """Write one sweep (trial, aggregate and summary runs) into ``experiment`` at ``tracking_uri``.

    Args:
        tracking_uri: the MLflow store.
        experiment: experiment name (created).
        grid: key -> values; ``seed`` repeats each configuration. Default: 3 seeds x 2 samplings.
        failed: trial keys whose run ends FAILED (half the loss curve, no final metrics).
        running: trial keys left RUNNING (a few steps only).
        steps: training steps per finished trial (``train/*`` logged every step).
        dev_every: periodic dev evaluation interval; None logs no ``dev/*`` history.
        pipelines: log ``pipeline/*`` and ``latency/*`` metrics.
        artifact_dir: artifact root of the experiment.
        summary: write aggregate and summary runs.
        reference: an untrained reference trial (group ``untrained``, started first, no training curves), compared
            against in the summary run with every statistic the sweep driver logs.
        loss_terms: log ``train/loss_pair`` and ``train/loss_inbatch`` beside ``train/loss``.
        plan: log ``plan/*`` batch-plan statistics with the final metrics.
    """
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    grid = grid or {"seed": [0, 1, 2], "sampler.sampling": ["random", "tasb"]}
    client = MlflowClient(tracking_uri)
    location = artifact_dir.resolve().as_uri() if artifact_dir else None
    exp_id = client.create_experiment(experiment, artifact_location=location)
    keys = list(grid)
    out = FakeSweep(experiment, exp_id, [])
    now = int(time.time() * 1000)
    combos = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    if reference:
        combos.insert(0, None)
    for i, values in enumerate(combos):
        if values is None:
            _write_reference(client, exp_id, out, now + i, pipelines)
            continue
        seed = int(values.get("seed", 0))
        group_values = {k: v for k, v in values.items() if k != "seed"}
        group = _group_label(group_values) if group_values else "base"
        key = f"t{i:02d}-" + _group_label(values).replace(",", "-")
        status = "FAILED" if key in failed else "RUNNING" if key in running else "FINISHED"
        params = {"seed": seed, "alpha": 0.75, "clusters.k": 20, "sampler.sampling": "tasb",
                  "sampler.pair_strategy": "margin", "student.model": "tiny", "optim.lr": 7e-6,
                  "plan_hash": f"h{i}", "git_commit": "abc123"}
        params.update(values)
        params.update({f"grid.{k}": v for k, v in values.items()})
        run = client.create_run(exp_id, run_name=key, start_time=now + i, tags={
            "tasb.kind": "trial", "tasb.group": group, "tasb.trial_key": key, "tasb.trial_id": f"tune_{i:05d}",
            "tasb.sweep": experiment})
        rid = run.info.run_id
        client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()])
        rng = np.random.default_rng(1000 + i)
        n_steps = steps if status == "FINISHED" else steps // 2 if status == "FAILED" else 3
        trial = FakeTrial(key, group, status, rid, {k: str(v) for k, v in params.items()})
        batch = []

        def add(name, value, step, batch=batch, trial=trial):
            batch.append(Metric(name, float(value), now, int(step)))
            trial.metrics[name] = float(value)
            trial.history.setdefault(name, []).append((int(step), float(value)))

        for step in range(n_steps):
            add("train/loss", 2.0 * np.exp(-step / 15) + 0.1 + rng.normal(0, 0.02), step)
            add("train/lr", 7e-6, step)
            if loss_terms:
                add("train/loss_pair", 1.5 * np.exp(-step / 15) + 0.05, step)
                add("train/loss_inbatch", 0.6 * np.exp(-step / 10) + 0.05, step)
            if dev_every and step % dev_every == 0:
                add("dev/nDCG_10", 0.4 + 0.15 * (1 - np.exp(-step / 20)) + rng.normal(0, 0.005), step)
        if status == "FINISHED":
            last = n_steps - 1
            for split in ("dev", "test"):
                for m in MEASURES:
                    add(f"final_{split}/{m}", _final_value(rng, values, seed, m), last)
            if plan:
                add("plan/single_cluster_share", 0.8 if values.get("sampler.sampling") == "tasb" else 0.05, last)
                add("plan/queries_per_epoch", 728, last)
            if pipelines:
                for j, p in enumerate(PIPELINES):
                    r = 0.3 + 0.05 * j + rng.normal(0, 0.005)
                    for d in DEPTHS:
                        add(f"pipeline/{p}/R_{d}", min(1.0, r + 0.12 * np.log10(d)), last)
                    add(f"pipeline/{p}/nDCG_10", 0.5 + 0.02 * j, last)
                    add(f"pipeline/{p}/MRR_10", 0.45 + 0.02 * j, last)
                for j, st in enumerate(STAGES):
                    p50 = (1.0 + j) * (40 if "rerank" in st else 1) * (1 + rng.uniform(0, 0.1))
                    add(f"latency/{st}/p50_ms", p50, last)
                    add(f"latency/{st}/p99_ms", 2.5 * p50, last)
                    add(f"latency/{st}/mean_ms", 1.2 * p50, last)
        for start in range(0, len(batch), 1000):
            client.log_batch(rid, metrics=batch[start:start + 1000])
        if status != "RUNNING":
            client.set_terminated(rid, status)
        out.trials.append(trial)
    if summary:
        _write_aggregates(client, exp_id, out, grid, reference)
    return out


REFERENCE_VALUES = {"nDCG_10": 0.51, "MRR_10": 0.47, "R_100": 0.83, "R_1000": 0.94}


def _write_reference(client, exp_id: str, sweep: FakeSweep, start: int, pipelines: bool) -> None:
    from mlflow.entities import Metric, Param

    params = {"seed": 0, "alpha": 0.75, "clusters.k": 20, "sampler.sampling": "random", "optim.max_steps": 0,
              "student.model": "tiny", "git_commit": "abc123"}
    run = client.create_run(exp_id, run_name="untrained", start_time=start, tags={
        "tasb.kind": "trial", "tasb.group": "untrained", "tasb.trial_key": "untrained", "tasb.sweep": sweep.experiment})
    rid = run.info.run_id
    trial = FakeTrial("untrained", "untrained", "FINISHED", rid, {k: str(v) for k, v in params.items()})
    metrics = {f"final_{split}/{m}": v + (0.1 if split == "dev" else 0.0) for split in ("dev", "test")
               for m, v in REFERENCE_VALUES.items()}
    if pipelines:
        metrics.update({f"pipeline/dense/R_{d}": min(1.0, 0.3 + 0.1 * np.log10(d)) for d in DEPTHS})
    trial.metrics.update(metrics)
    client.log_batch(rid, params=[Param(k, str(v)) for k, v in params.items()],
                     metrics=[Metric(k, v, start, 0) for k, v in metrics.items()])
    client.set_terminated(rid, "FINISHED")
    sweep.trials.append(trial)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


# What the sweep driver logs per comparison (experiments/sweep.py COMPARISON_STATS), with made-up values.
FULL_STATS = {"mean_diff": 0.012, "ci95_low": -0.004, "ci95_high": 0.028, "sd_diff": 0.14, "p_value": 0.04,
              "p_perm": 0.05, "p_holm": 0.12, "p_perm_holm": 0.15, "effect_size": 0.3, "mde_queries": 0.0226,
              "mde_seeds": 0.018, "queries": 300, "seeds_a": 3, "seeds_b": 3}


def _write_aggregates(client, exp_id: str, sweep: FakeSweep, grid: dict, reference: bool = False) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    for group in dict.fromkeys(t.group for t in sweep.trials):
        done = [t for t in sweep.trials if t.group == group and t.status == "FINISHED"]
        run = client.create_run(exp_id, run_name=f"aggregate {group}", tags={"tasb.kind": "aggregate",
                                                                             "tasb.group": group})
        client.log_batch(run.info.run_id, params=[Param("n_trials", str(len(done))), Param(
            "seeds", ",".join(t.params["seed"] for t in done))], metrics=[
            Metric(f"final_test/{m}/mean", float(np.mean([t.metrics[f"final_test/{m}"] for t in done])), now, 0)
            for m in MEASURES if done])
        client.set_terminated(run.info.run_id, "FINISHED")
    run = client.create_run(exp_id, run_name="summary", tags={"tasb.kind": "summary"})
    groups = [g for g in dict.fromkeys(t.group for t in sweep.trials) if g != "untrained"]
    metrics = []
    if not reference:
        for g in groups[1:]:
            for stat, v in (("p_value", 0.04), ("effect_size", 0.3), ("mean_diff", 0.012)):
                metrics.append(Metric(f"compare/{_safe(g)}__vs__{_safe(groups[0])}/nDCG_10/{stat}", v, now, 0))
    else:
        pairs = [(g, groups[0]) for g in groups[1:]] + [(g, "untrained") for g in groups]
        for i, (g, b) in enumerate(pairs):
            for measure in ("nDCG_10", "R_100"):
                for stat, v in FULL_STATS.items():
                    v = v + 0.001 * i if stat == "mean_diff" else v
                    metrics.append(Metric(f"compare/{_safe(g)}__vs__{_safe(b)}/{measure}/{stat}", v, now, 0))
    params = [Param("sweep", sweep.experiment), Param("grid", json.dumps(grid)), Param("baseline", groups[0])]
    if reference:
        params.append(Param("reference", "untrained"))
    client.log_batch(run.info.run_id, params=params, metrics=metrics)
    client.set_terminated(run.info.run_id, "FINISHED")
    sweep.summary_run_id = run.info.run_id


@dataclass
class Store:
    uri: str
    root: Path
    sweeps: dict[str, FakeSweep]



@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory) -> Store:
    """One SQLite store with: ``seeds`` (2 samplings x 3 seeds, one FAILED), ``alpha-k`` (alpha x clusters.k x 2
    seeds, one FAILED, no periodic dev eval), ``empty`` (no runs), ``unfinished`` (running and failed only),
    ``foreign`` (runs without tasb tags)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    art = root / "artifacts"
    sweeps = {"seeds": write_fake_sweep(uri, "seeds", failed=[SEEDS_FAILED], artifact_dir=art / "seeds")}
    sweeps["alpha-k"] = write_fake_sweep(
        uri, "alpha-k", grid={"seed": [0, 1], "alpha": [0.0, 0.75, 1.5], "clusters.k": [5, 20]},
        failed=[ALPHA_FAILED], dev_every=None, pipelines=False, artifact_dir=art / "ak")
    sweeps["seeds-ref"] = write_fake_sweep(uri, "seeds-ref", grid={"seed": [0, 1], "sampler.sampling": ["random", "tasb"]},
                                           reference=True, loss_terms=True, plan=True, artifact_dir=art / "ref")
    sweeps["unfinished"] = write_fake_sweep(uri, "unfinished", grid={"seed": [0, 1, 2]},
                                            failed=["t00-seed=0"], running=["t01-seed=1", "t02-seed=2"],
                                            summary=False, artifact_dir=art / "unf")
    client = MlflowClient(uri)
    client.create_experiment("empty", artifact_location=(art / "empty").resolve().as_uri())
    foreign = client.create_experiment("foreign", artifact_location=(art / "foreign").resolve().as_uri())
    client.set_terminated(client.create_run(foreign).info.run_id)
    return Store(uri, root, sweeps)


@dataclass
class BuiltReport:
    path: Path
    stdout: str


def _cli_report(store: Store, experiment: str, out: Path, *extra: str) -> BuiltReport:
    import contextlib
    import io

    from tasb_ray.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["report", "--experiment", experiment, "--tracking-uri", store.uri, "--out", str(out), *extra])
    assert rc == 0, buf.getvalue()
    return BuiltReport(out, buf.getvalue())


@pytest.fixture(scope="session")
def seeds_report(sweep_store, tmp_path_factory) -> BuiltReport:
    """``tasb-ray report`` of the seeds sweep, also logged to its summary run."""
    return _cli_report(sweep_store, "seeds", tmp_path_factory.mktemp("report") / "sub" / "seeds-report.html",
                       "--log-artifact")


@pytest.fixture(scope="session")
def grid_report(sweep_store, tmp_path_factory) -> BuiltReport:
    """``tasb-ray report`` of the alpha x clusters.k sweep."""
    return _cli_report(sweep_store, "alpha-k", tmp_path_factory.mktemp("report") / "report.html")
