"""Trials of a sweep: the grid's cartesian product, each trial's training config, its configuration group."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tasb_ray.config import apply_overrides, from_dict, load_yaml, to_dict
from tasb_ray.errors import ConfigError
from tasb_ray.experiments.config import SweepConfig
from tasb_ray.training.config import TrainingConfig

SEED_KEY = "seed"


def _fmt(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def label(values: dict) -> str:
    """``{"sampler.sampling": "random", "alpha": 0.75}`` → ``alpha=0.75,sampler.sampling=random`` (sorted keys)."""
    return ",".join(f"{k}={_fmt(v)}" for k, v in sorted(values.items())) or "all"


def safe_name(text: str) -> str:
    """A label as an MLflow key / file name part: only [A-Za-z0-9_.-]."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "all"


@dataclass(frozen=True)
class TrialSpec:
    """One point of the grid.

    Attributes:
        values: the grid's values for this trial (dotted keys).
        key: a stable name for the trial (its label).
        group: the configuration group's label, i.e. the values without the seed; seeds of one group are
            the repetitions that the robustness statistics summarise.
    """

    values: dict
    key: str
    group: str

    @property
    def group_values(self) -> dict:
        return {k: v for k, v in self.values.items() if k != SEED_KEY}


def expand_grid(grid: dict) -> list[TrialSpec]:
    keys = list(grid)
    trials = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        group_values = {k: v for k, v in values.items() if k != SEED_KEY}
        trials.append(TrialSpec(values, label(values), label(group_values)))
    return trials


def apply_values(data: dict, values: dict) -> dict:
    """``data`` with dotted-key ``values`` set, e.g. ``{"optim.lr": 6e-5}``."""
    return apply_overrides(data, [f"{k}={_fmt(v)}" for k, v in values.items()])


def base_training_dict(sweep: SweepConfig) -> dict:
    """The base training config with the sweep's ``set`` overrides, as plain data."""
    return apply_values(load_yaml(sweep.base_path()), sweep.set)


def trial_training_config(base: dict, trial: TrialSpec, name: str, output_dir: str | Path | None = None,
                          extra: dict | None = None) -> TrainingConfig:
    """The resolved training config of one trial; unknown grid keys fail by name."""
    overrides = {**trial.values, "name": name, **(extra or {})}
    if output_dir is not None:
        overrides["output_dir"] = str(output_dir)
    data = apply_values(base, overrides)
    try:
        return from_dict(TrainingConfig, data)
    except ConfigError as e:
        raise ConfigError(f"trial {trial.key}: {e}") from None


def check_grid(sweep: SweepConfig, base: dict) -> list[TrialSpec]:
    """Expand the grid and build every trial's config once, so a bad key fails before Ray starts."""
    return check_trials(sweep.grid, base, sweep.name)


def check_trials(grid: dict, base: dict, name: str, extra: dict | None = None) -> list[TrialSpec]:
    """Every trial's config built once: an unknown grid key or a bad value fails before anything runs."""
    trials = expand_grid(grid)
    for t in trials:
        cfg = trial_training_config(base, t, name, extra=extra)
        flat = _flat_keys(to_dict(cfg))
        for key in t.values:
            if key not in flat:
                raise ConfigError(f"grid.{key}: not a training config key")
    return trials


def _flat_keys(d: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in d.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _flat_keys(v, f"{prefix}{k}.")
    return keys


def baseline_group(sweep: SweepConfig, trials: list[TrialSpec]) -> str:
    groups = list(dict.fromkeys(t.group for t in trials))
    if sweep.baseline is None:
        return groups[0]
    wanted = label({k: v for k, v in sweep.baseline.items() if k != SEED_KEY})
    if wanted not in groups:
        raise ConfigError(f"baseline {sweep.baseline}: no such group (groups: {groups})")
    return wanted
