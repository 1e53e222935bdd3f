"""The in-process dev search: grid parsing, dev-only evaluation, resume, best group, --best-of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from sweep_fixture import tiny_base_config

from tasb_ray.errors import ConfigError
from tasb_ray.experiments.search import best_values, parse_grid, run_search

ROOT = Path(__file__).resolve().parents[2]


def _base(tmp_path, tiny_beir, tiny_model) -> dict:
    base = tiny_base_config(tmp_path, tiny_beir, tiny_model)
    base["optim"]["max_steps"] = 2
    base["eval"] = {"k": 20}   # evaluated once, at the end, as tasb-ray train does by default
    return base


def test_parse_grid():
    assert parse_grid(["optim.lr=1e-5,3.0e-5", "seed=0,1", "sampler.sampling=random"]) == {
        "optim.lr": [1e-5, 3e-5], "seed": [0, 1], "sampler.sampling": ["random"]}
    for bad in (["optim.lr"], ["=1"], ["seed="], ["seed=0", "seed=1"]):
        with pytest.raises(ConfigError, match="--grid"):
            parse_grid(bad)


def _fake_runner(scores: dict, calls: list):
    """A run_training stand-in: dev nDCG@10 from the lr, test only when the config asks for it."""
    def run(cfg):
        calls.append(cfg)
        dev = scores[cfg.optim.lr] + cfg.seed * 0.001
        metrics = {"dev": {"nDCG@10": dev, "R@100": 0.9}}
        if cfg.eval.test:
            metrics["test"] = {"nDCG@10": dev - 0.05, "R@100": 0.8}
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps({"metrics": metrics}))
        return SimpleNamespace(metrics=metrics)
    return run


def test_search_picks_best_mean_on_dev_and_resumes(tmp_path, tiny_beir, tiny_model):
    base = _base(tmp_path, tiny_beir, tiny_model)
    calls: list = []
    runner = _fake_runner({1e-5: 0.50, 3e-5: 0.60, 1e-4: 0.55}, calls)
    grid = {"optim.lr": [1e-5, 3e-5, 1e-4], "seed": [0, 1]}
    res = run_search(base, grid, tmp_path / "s", runner=runner)
    assert len(calls) == 6 and not any(c.eval.test for c in calls)
    assert all("test" not in t["metrics"] for t in res.trials)
    assert res.best["values"] == {"optim.lr": 3e-5}
    g = next(g for g in res.groups if g["values"] == {"optim.lr": 3e-5})
    assert g["n"] == 2 and g["dev"]["nDCG@10"]["mean"] == pytest.approx(0.6005)
    assert g["dev"]["nDCG@10"]["sd"] == pytest.approx(0.000707, abs=1e-6)
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["best"]["values"] == {"optim.lr": 3e-5}
    assert "(best on dev)" in (tmp_path / "s" / "summary.md").read_text()
    assert len((tmp_path / "s" / "search.jsonl").read_text().splitlines()) == 6

    # Same command again: every trial is read back, none trained.
    run_search(base, grid, tmp_path / "s", runner=runner)
    assert len(calls) == 6
    # With test asked for, trials whose results lack test are run again (and only then).
    res = run_search(base, grid, tmp_path / "s", runner=runner, test=True)
    assert len(calls) == 12 and all(c.eval.test for c in calls[6:])
    assert all("test" in t["metrics"] for t in res.trials)
    assert best_values(tmp_path / "s" / "summary.json") == {"optim.lr": 3e-5}


def test_bad_grid_key_fails_before_any_trial(tmp_path, tiny_beir, tiny_model):
    calls: list = []
    with pytest.raises(ConfigError, match="optim.lrr"):
        run_search(_base(tmp_path, tiny_beir, tiny_model), {"seed": [0], "optim.lrr": [1e-5]}, tmp_path / "s",
                   runner=_fake_runner({}, calls))
    assert calls == [] and not (tmp_path / "s").exists()


def test_real_search_and_best_of(tmp_path, tiny_beir, tiny_model):
    """Two real tiny trials through the driver; then --best-of carries the chosen lr into a --test run."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_base(tmp_path, tiny_beir, tiny_model)))
    script = [sys.executable, str(ROOT / "experiments" / "dev_search.py"), str(cfg)]
    r = subprocess.run(script + ["--grid", "optim.lr=1e-4,3e-4", "--run-dir", str(tmp_path / "a")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "a" / "search.jsonl").read_text().splitlines()]
    assert [set(t["metrics"]) for t in rows] == [{"dev"}, {"dev"}]
    best = max(rows, key=lambda t: t["metrics"]["dev"]["nDCG@10"])
    assert summary["best"]["values"] == best["values"] and "best on dev" in r.stdout

    r = subprocess.run(script + ["--best-of", str(tmp_path / "a" / "summary.json"), "--grid", "seed=0",
                                 "--test", "--run-dir", str(tmp_path / "b")], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    (trial,) = [json.loads(x) for x in (tmp_path / "b" / "search.jsonl").read_text().splitlines()]
    assert set(trial["metrics"]) == {"dev", "test"}
    resolved = yaml.safe_load((Path(trial["output_dir"]) / "config.yaml").read_text())
    assert resolved["optim"]["lr"] == best["values"]["optim.lr"]

    r = subprocess.run(script + ["--grid", "optim.lr", "--run-dir", str(tmp_path / "c")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--grid" in r.stderr
