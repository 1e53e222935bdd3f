"""A real 2-trial sweep end to end: Ray Tune trials, MLflow runs and aggregates, a killed trial that resumes."""

from __future__ import annotations

import json

import pytest
import yaml


def _client(sweep):
    from mlflow.tracking import MlflowClient

    return MlflowClient(sweep.result.tracking_uri)


def _runs(sweep, kind, trained=None):
    """Runs of ``kind``; ``trained`` True / False keeps only the trained groups' / the untrained reference's."""
    client = _client(sweep)
    runs = client.search_runs([sweep.result.experiment_id], filter_string=f"tags.`tasb.kind` = '{kind}'")
    if trained is None:
        return runs
    return [r for r in runs if (r.data.tags.get("tasb.group") != "untrained") == trained]


def test_tiny_sweep_logs_trials_to_mlflow(tiny_sweep):
    result = tiny_sweep.result
    assert result.tracking_uri == f"sqlite:///{tiny_sweep.root / 'run' / 'mlflow.db'}"
    assert list(result.trials["status"]) == ["FINISHED"] * 3
    assert list(result.trials["group"]) == ["all", "all", "untrained"]   # the reference closes the tables
    trials = _runs(tiny_sweep, "trial", trained=True)
    assert len(trials) == 2 and len(_runs(tiny_sweep, "trial")) == 3
    client = _client(tiny_sweep)
    for run in trials:
        p = run.data.params
        assert run.info.status == "FINISHED"
        for key in ("seed", "alpha", "clusters.k", "sampler.sampling", "sampler.pair_strategy", "student.model",
                    "teachers.pairwise.kind", "plan_hash", "git_commit"):
            assert key in p, key
        assert len(p["plan_hash"]) == 64
        m = run.data.metrics
        for key in ("final_dev/nDCG_10", "final_test/nDCG_10", "final_test/R_100", "pipeline/bm25/nDCG_10",
                    "pipeline/rerank/R_100", "pipeline/fusion-rrf/MRR_10", "latency/dense-encode/p50_ms",
                    "latency/pipeline:rerank/p99_ms"):
            assert key in m, key
        loss = client.get_metric_history(run.info.run_id, "train/loss")
        assert [x.step for x in sorted(loss, key=lambda x: x.step)] == [1, 2, 3, 4]
        assert len(client.get_metric_history(run.info.run_id, "dev/nDCG_10")) == 2
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "results.json", "runs", "pipeline.md"} <= artifacts
        assert {a.path for a in client.list_artifacts(run.info.run_id, "runs")} >= {"runs/test.trec"}
    seeds = sorted(r.data.params["seed"] for r in trials)
    assert seeds == ["0", "1"]


def test_tiny_sweep_aggregate_run(tiny_sweep):
    (agg,) = _runs(tiny_sweep, "aggregate", trained=True)
    m = agg.data.metrics
    trials = {r.data.params["seed"]: r.data.metrics for r in _runs(tiny_sweep, "trial", trained=True)}
    values = [trials[s]["final_test/nDCG_10"] for s in ("0", "1")]
    assert m["final_test/nDCG_10/mean"] == pytest.approx(sum(values) / 2)
    assert m["final_test/nDCG_10/sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert m["final_test/nDCG_10/n"] == 2
    assert m["final_test/nDCG_10/min"] <= m["final_test/nDCG_10/ci95_high"]
    assert agg.data.params["seeds"] in ("0,1", "1,0")
    (summary,) = _runs(tiny_sweep, "summary")
    names = {a.path for a in _client(tiny_sweep).list_artifacts(summary.info.run_id)}
    assert {"robustness.md", "robustness.csv", "trials.csv"} <= names


def test_killed_trial_resumes_to_the_uninterrupted_result(tiny_sweep, tmp_path):
    """Seed 1 was killed right after its step-2 checkpoint; Tune restarted it from that checkpoint."""
    from tasb_ray.config import from_dict
    from tasb_ray.pipeline.run import run_training
    from tasb_ray.training.config import TrainingConfig

    marker = tiny_sweep.root / "run" / "faults" / "seed_1.done"
    assert marker.is_file(), "the fault was not injected"
    (killed,) = [r for r in _runs(tiny_sweep, "trial", trained=True) if r.data.params["seed"] == "1"]
    assert killed.data.tags.get("tasb.retries") == "1"

    # The same trial, uninterrupted, in this process.
    base = yaml.safe_load((tiny_sweep.root / "base.yaml").read_text())
    run_dir = tiny_sweep.root / "run"
    from tasb_ray.experiments.config import load_sweep_config
    from tasb_ray.experiments.grid import TrialSpec, trial_training_config
    from tasb_ray.experiments.sweep import _absolute_locations

    sweep = load_sweep_config(tiny_sweep.config)
    cfg = trial_training_config(_absolute_locations(base, run_dir), TrialSpec({"seed": 1}, "seed=1", "all"),
                                f"{sweep.name}/seed=1", output_dir=tmp_path / "ref")
    ref = run_training(from_dict(TrainingConfig, {**_plain(cfg), "progress": False}))
    for split in ("dev", "test"):
        for metric, value in ref.metrics[split].items():
            key = f"final_{split}/{metric.replace('@', '_')}"
            assert killed.data.metrics[key] == pytest.approx(value, abs=1e-9), key
    assert killed.data.params["plan_hash"] == ref.plan_hash


def _plain(cfg):
    from tasb_ray.config import to_dict

    return to_dict(cfg)


def test_sweep_results_files(tiny_sweep):
    out = tiny_sweep.root / "run" / "results"
    assert "± " in (out / "robustness.md").read_text()
    assert (tiny_sweep.root / "run" / "tune").is_dir()
    ray_dir = tiny_sweep.root / "run" / "ray"
    assert ray_dir.exists()
    trials = (out / "trials.csv").read_text()
    assert "FINISHED" in trials
    assert json.loads(json.dumps(tiny_sweep.result.tables))["robustness"].count("\n") >= 3


def test_report_of_the_real_tiny_sweep_in_chromium(tiny_sweep):
    """The sweep logged its HTML report; it opens in headless Chromium and its trial table is the MLflow metrics."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reporting"))
    from chromium import chromium_path, visit
    from dom import parse

    report = tiny_sweep.root / "run" / "results" / "report.html"
    assert report.is_file()
    (summary,) = _runs(tiny_sweep, "summary")
    (aggregate, _) = _runs(tiny_sweep, "aggregate")
    for run in (summary, aggregate):
        assert "report.html" in {a.path for a in _client(tiny_sweep).list_artifacts(run.info.run_id)}
    if chromium_path() is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    page = visit(report)
    assert page.errors == [], page.errors
    assert [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))] == []
    tables, _ = parse(page.html)
    for plot in ("plot-seed-spread", "plot-training-curves", "plot-pipeline-recall", "plot-latency"):
        assert f'id="{plot}"' in page.html, plot
    client = _client(tiny_sweep)
    rows = tables["table-trials"].rows
    assert len(rows) == 3
    for row in rows:
        run = client.get_run(row.attrs["data-run-id"])
        assert row.cells["status"].text == "FINISHED"
        value = run.data.metrics["final_test/nDCG_10"]
        assert float(row.cells["final_test/nDCG_10"].value) == value


def test_untrained_reference_is_the_student_before_training(tiny_sweep):
    """The reference trial's metrics are the untrained student's, evaluated here directly at the trials' settings."""
    from tasb_ray.config import from_dict
    from tasb_ray.data import PreparedDataset
    from tasb_ray.evaluation.first_stage import build_dense_index, dense_search
    from tasb_ray.evaluation.metrics import evaluate
    from tasb_ray.models.encoder import BertDot
    from tasb_ray.pipeline.run import open_data
    from tasb_ray.training.config import TrainingConfig

    (ref,) = _runs(tiny_sweep, "trial", trained=False)
    assert ref.info.run_name == "untrained" and ref.info.status == "FINISHED"
    assert ref.data.params["optim.max_steps"] == "0" and ref.data.params["eval.every"] == "0"
    assert _client(tiny_sweep).get_metric_history(ref.info.run_id, "train/loss") == []
    base = yaml.safe_load((tiny_sweep.root / "base.yaml").read_text())
    cfg = from_dict(TrainingConfig, {**base, "progress": False})
    ds: PreparedDataset = open_data(cfg)
    s = cfg.student
    student = BertDot(s.model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                      passage_max_len=s.passage_max_len, attention_dropout=s.attention_dropout,
                      score_scale=s.score_scale).eval()
    index = build_dense_index(student, ds.corpus(), cfg.eval.batch_size)
    for split in ("dev", "test"):
        run = dense_search(student, index, ds.queries(split), cfg.eval.k, cfg.eval.batch_size)
        expected = evaluate(run, ds.qrels(split), cfg.eval.metrics, cfg.data.rel_level)
        for metric, value in expected.items():
            assert ref.data.metrics[f"final_{split}/{metric.replace('@', '_')}"] == pytest.approx(value, abs=1e-6)
    assert "pipeline/dense/nDCG_10" in ref.data.metrics


def test_reference_group_in_tables_and_comparisons(tiny_sweep):
    result = tiny_sweep.result
    tables = result.tables
    assert "| untrained |" in tables["robustness"] and "| untrained | dense |" in tables["pipelines"]
    comp = result.comparisons
    assert list(zip(comp["group"], comp["baseline"])) == [("all", "untrained")] * 2
    header = tables["comparisons"].splitlines()[0]
    for col in ("mean_diff", "95% CI", "sd_diff", "p_t", "p_perm", "p_t_holm", "p_perm_holm", "mde_queries",
                "mde_seeds"):
        assert f" {col} |" in header, col
    row = comp.iloc[0]
    assert row["ci95_low"] <= row["mean_diff"] <= row["ci95_high"] and row["p_holm"] >= row["p_value"]
    (summary,) = _runs(tiny_sweep, "summary")
    assert summary.data.params["reference"] == "untrained"
    m = summary.data.metrics
    for stat in ("mean_diff", "ci95_low", "ci95_high", "sd_diff", "p_value", "p_perm", "p_holm", "mde_queries",
                 "mde_seeds"):
        assert f"compare/all__vs__untrained/nDCG_10/{stat}" in m, stat
    assert (tiny_sweep.root / "run" / "results" / "per_query.parquet").is_file()
