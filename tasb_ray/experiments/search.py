"""A grid search on the dev split, run in one process: no Ray, no MLflow.

For choosing training settings (learning rate, epochs, ...) where a Ray cluster is not worth starting: a
single GPU box, or a quick look on a laptop. Each grid point is one :func:`run_training` call; the test split
is evaluated only when asked for (``test=True``), so settings are picked on dev alone. Finished trials are read
back from their ``results.json``, so an interrupted search continues where it stopped.

The Ray Tune sweeps (``experiments/seeds.py`` etc.) do the same at scale, with MLflow tracking.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from tasb_ray.config import to_dict
from tasb_ray.errors import ConfigError
from tasb_ray.experiments.grid import SEED_KEY, TrialSpec, check_trials, safe_name, trial_training_config
from tasb_ray.experiments.robustness import summarize
from tasb_ray.fileio import write_json, write_text
from tasb_ray.pipeline.run import run_training
from tasb_ray.training.config import TrainingConfig

log = logging.getLogger(__name__)
SUMMARY = "summary.json"


def parse_grid(items: list[str]) -> dict[str, list]:
    """``["optim.lr=1e-5,3e-5", "seed=0,1"]`` → ``{"optim.lr": [1e-5, 3e-5], "seed": [0, 1]}`` (YAML scalars)."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid {item!r}: expected key=value[,value...]")
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice")
        grid[key] = [_scalar(v) for v in raw.split(",")]
    return grid


def _scalar(raw: str):
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-5" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    return value


@dataclass
class SearchResult:
    trials: list[dict]              # key, group, values, metrics (split -> metric -> value), seconds (None: read back)
    groups: list[dict]              # group, values, n, <split>: {metric: stats}
    best: dict = field(default_factory=dict)   # the group with the highest mean dev metric


def _needed_splits(cfg: TrainingConfig) -> list[str]:
    return [cfg.data.dev_split] + ([cfg.data.test_split] if cfg.eval.test else [])


def _finished(cfg: TrainingConfig, out: Path) -> dict | None:
    """The metrics of a finished trial that already holds every split this config asks for, else None."""
    path = out / "results.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text()).get("metrics", {})
    return metrics if all(s in metrics for s in _needed_splits(cfg)) else None


def run_search(base: dict, grid: dict[str, list], run_dir: str | Path, *, name: str = "search",
               test: bool = False, runner: Callable | None = None) -> SearchResult:
    """Train and evaluate every point of ``grid`` on top of the training config ``base``.

    Args:
        base: a training config as plain data (a YAML file with overrides applied).
        grid: dotted config key → values; the cartesian product is searched. ``seed`` values are repetitions of
            one group, summarised as mean and sd.
        run_dir: each trial writes to ``run_dir/<trial>``; ``search.jsonl`` and ``summary.{json,md}`` go here.
        name: prefix of the trials' run names.
        test: also evaluate the test split (for the final comparison, never for picking settings).
        runner: ``run_training`` by default (a test may pass its own).

    Returns:
        The trials, the per-group summary and the best group on dev.
    """
    if runner is None:
        runner = run_training

    run_dir = Path(run_dir)
    extra = {"eval.test": test}
    trials = check_trials(grid, base, name, extra)   # every key and value checked before anything runs
    configs = [(t, trial_training_config(base, t, f"{name}-{safe_name(t.key)}", run_dir / safe_name(t.key), extra))
               for t in trials]
    rows = []
    for i, (t, cfg) in enumerate(configs, 1):
        out = Path(cfg.output_dir)
        metrics = _finished(cfg, out)
        seconds = None   # a trial read back from an earlier run was not timed by this one
        if metrics is None:
            log.info("[%d/%d] %s: training", i, len(configs), t.key)
            start = time.perf_counter()
            metrics = runner(cfg).metrics
            seconds = round(time.perf_counter() - start, 1)
        dev = metrics[cfg.data.dev_split].get(cfg.eval.metric)
        log.info("[%d/%d] %s: dev %s %.4f (%s)", i, len(configs), t.key, cfg.eval.metric, dev,
                 "read back" if seconds is None else f"{seconds:.0f} s")
        rows.append({"key": t.key, "group": t.group, "values": t.values, "metrics": metrics,
                     "seconds": seconds, "output_dir": str(out)})
    result = summarize_search(rows, trials, configs[0][1])
    write_search(run_dir, result, configs[0][1], base, grid)
    return result


def summarize_search(rows: list[dict], trials: list[TrialSpec], cfg: TrainingConfig) -> SearchResult:
    """Mean, sd etc. per group and split; the best group is the one with the highest mean dev ``eval.metric``."""
    groups = []
    for group in dict.fromkeys(t.group for t in trials):
        members = [r for r in rows if r["group"] == group]
        if not members:
            continue
        entry = {"group": group, "values": {k: v for k, v in members[0]["values"].items() if k != SEED_KEY},
                 "n": len(members), "seeds": [r["values"].get(SEED_KEY) for r in members]}
        for split in dict.fromkeys(s for r in members for s in r["metrics"]):
            names = dict.fromkeys(m for r in members for m in r["metrics"].get(split, {}))
            entry[split] = {m: summarize([r["metrics"][split][m] for r in members if m in r["metrics"].get(split, {})])
                            for m in names}
        groups.append(entry)
    dev, metric = cfg.data.dev_split, cfg.eval.metric
    ranked = [g for g in groups if metric in g.get(dev, {})]
    best = max(ranked, key=lambda g: g[dev][metric]["mean"]) if ranked else {}
    return SearchResult(rows, groups, {"group": best["group"], "values": best["values"]} if best else {})


def write_search(run_dir: Path, result: SearchResult, cfg: TrainingConfig, base: dict, grid: dict) -> None:
    dev, test, metric = cfg.data.dev_split, cfg.data.test_split, cfg.eval.metric
    write_text(run_dir / "search.jsonl", "".join(json.dumps(r) + "\n" for r in result.trials))
    write_json(run_dir / SUMMARY, {"metric": metric, "dev_split": dev, "grid": grid, "best": result.best,
                                   "groups": result.groups, "base": to_dict(base)})
    cols = [(dev, metric), (dev, "R@100"), (test, metric), (test, "R@100")]
    cols = [(s, m) for s, m in cols if any(m in g.get(s, {}) for g in result.groups)]
    lines = ["| group | n | " + " | ".join(f"{s} {m}" for s, m in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for g in result.groups:
        mark = " **(best on dev)**" if g["group"] == result.best.get("group") else ""
        cells = []
        for s, m in cols:
            st = g.get(s, {}).get(m)
            cells.append(f"{st['mean']:.4f} ± {st['sd']:.4f}" if st and st.get("n") else "")
        lines.append(f"| {g['group']}{mark} | {g['n']} | " + " | ".join(cells) + " |")
    write_text(run_dir / "summary.md", "\n".join(lines) + "\n")


def best_values(summary_path: str | Path) -> dict:
    """The best group's values from a search's ``summary.json`` (to train at the chosen settings)."""
    path = Path(summary_path)
    if not path.is_file():
        raise ConfigError(f"{path}: search summary not found")
    best = json.loads(path.read_text()).get("best") or {}
    if "values" not in best:
        raise ConfigError(f"{path}: no best group (did any trial finish?)")
    return best["values"]
