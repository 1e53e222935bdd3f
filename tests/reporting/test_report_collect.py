"""Reading a sweep back from MLflow: every trial, its knobs and metrics, curves, and clear errors."""

from __future__ import annotations

import math

import pytest
from report_fixture import ALPHA_FAILED, SEEDS_FAILED

from tasb_ray.errors import TasbRayError
from tasb_ray import tracking
from tasb_ray.reporting import collect
from tasb_ray.reporting.collect import collect_sweep


def test_trials_carry_knobs_metrics_and_status(sweep_store):
    data = collect_sweep("seeds", sweep_store.uri)
    fake = sweep_store.sweeps["seeds"]
    assert len(data.trials) == 6
    assert data.status_counts() == {"FAILED": 1, "FINISHED": 5}
    # groups in grid order, seeds ascending inside a group
    assert list(data.trials["group"]) == ["sampler.sampling=random"] * 3 + ["sampler.sampling=tasb"] * 3
    assert list(data.trials["seed"]) == [0, 1, 2, 0, 1, 2]
    assert data.trials["alpha"].tolist() == [0.75] * 6 and data.trials["clusters.k"].tolist() == [20] * 6
    for got in data.trials.to_dict("records"):
        expected = fake.trial(got["trial"])
        assert got["run_id"] == expected.run_id and got["status"] == expected.status
        checked = [k for k in expected.metrics if k.startswith(("final_", "pipeline/", "latency/"))]
        assert all(got[k] == expected.metrics[k] for k in checked)
        assert len(checked) == (0 if expected.status == "FAILED" else 8 + 5 * 9 + 11 * 3)
    failed = data.trials[data.trials["trial"] == SEEDS_FAILED].iloc[0]
    assert failed["status"] == "FAILED" and math.isnan(failed["final_test/nDCG_10"])
    assert data.knobs == ["sampler.sampling"]
    assert data.summary is not None and data.summary["run_id"] == fake.summary_run_id


def test_curves_are_full_histories(sweep_store):
    data = collect_sweep("seeds", sweep_store.uri)
    fake = sweep_store.sweeps["seeds"]
    for t in fake.trials:
        for metric in ("train/loss", "dev/nDCG_10"):
            got = data.curves[(data.curves["run_id"] == t.run_id) & (data.curves["metric"] == metric)]
            assert list(zip(got["step"], got["value"])) == t.history[metric]
    failed = data.curves[data.curves["trial"] == SEEDS_FAILED]
    assert set(failed["status"]) == {"FAILED"} and failed["step"].max() == 19


def test_grid_knobs_from_summary_and_without_dev_eval(sweep_store):
    data = collect_sweep("alpha-k", sweep_store.uri)
    assert data.knobs == ["alpha", "clusters.k"]
    assert sorted(data.trials["alpha"].unique()) == [0.0, 0.75, 1.5]
    assert sorted(data.trials["clusters.k"].unique()) == [5, 20]
    assert set(data.curves["metric"]) == {"train/loss"}
    assert data.trials.set_index("trial").loc[ALPHA_FAILED, "status"] == "FAILED"


def test_pagination_reads_every_run(sweep_store, monkeypatch):
    monkeypatch.setattr(tracking, "PAGE", 5)   # the Tracker pages runs since the one-layering change
    data = collect_sweep("alpha-k", sweep_store.uri)
    assert len(data.trials) == 12 and data.trials["run_id"].is_unique


@pytest.mark.parametrize("experiment, message", [
    ("nope", "no MLflow experiment named 'nope'"),
    ("empty", "has no runs yet"),
    ("foreign", "no trial runs (tag tasb.kind=trial)"),
    ("unfinished", "has no finished trials yet (1 failed, 2 running)"),
])
def test_unusable_experiments_give_one_line(sweep_store, experiment, message):
    with pytest.raises(TasbRayError, match=r".*") as err:
        collect_sweep(experiment, sweep_store.uri)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_database_is_not_created(tmp_path):
    db = tmp_path / "missing" / "mlflow.db"
    with pytest.raises(TasbRayError, match="no MLflow database at"):
        collect_sweep("x", f"sqlite:///{db}")
    assert not db.exists()
