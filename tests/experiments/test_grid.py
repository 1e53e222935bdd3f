"""Sweep configs and grids: trials, groups, baseline, bad keys named."""

from __future__ import annotations

import pytest
import yaml
from sweep_fixture import write_sweep

from tasb_ray.errors import ConfigError
from tasb_ray.experiments.config import load_sweep_config
from tasb_ray.experiments.grid import base_training_dict, baseline_group, check_grid, expand_grid, label


def test_expand_grid_groups_seeds():
    trials = expand_grid({"seed": [0, 1], "sampler.sampling": ["tas-balanced", "random"]})
    assert len(trials) == 4
    assert {t.group for t in trials} == {"sampler.sampling=tas-balanced", "sampler.sampling=random"}
    assert trials[0].key == "sampler.sampling=tas-balanced,seed=0"
    assert label({"alpha": 0.75, "clusters.k": 16}) == "alpha=0.75,clusters.k=16"
    assert expand_grid({"seed": [0, 1]})[0].group == "all"


def _write(tmp_path, **sweep):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "b", "optim": {"max_steps": 2}}))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": "base.yaml", **sweep}))
    return path


def test_sweep_config_resolves_base_and_checks_grid(tmp_path):
    sweep = load_sweep_config(_write(tmp_path, grid={"seed": [0, 1], "alpha": [0.0, 0.75]},
                                     baseline={"alpha": 0.0}, set={"optim.lr": 1e-4}))
    base = base_training_dict(sweep)
    assert base["optim"] == {"max_steps": 2, "lr": 1e-4}
    trials = check_grid(sweep, base)
    assert baseline_group(sweep, trials) == "alpha=0.0"

    bad = load_sweep_config(_write(tmp_path, grid={"optim.nope": [1]}))
    with pytest.raises(ConfigError, match="optim.nope"):
        check_grid(bad, base_training_dict(bad))
    with pytest.raises(ConfigError, match="grid.seed: expected a non-empty list"):
        load_sweep_config(_write(tmp_path, grid={"seed": 3}))
    with pytest.raises(ConfigError, match="baseline"):
        load_sweep_config(_write(tmp_path, grid={"seed": [0]}, baseline={"alpha": 0}))
    with pytest.raises(ConfigError, match="unknown key 'resources.gpu'"):
        load_sweep_config(_write(tmp_path, grid={"seed": [0]}, resources={"gpu": 1}))


def test_unknown_grid_key_fails_before_anything_is_written(tmp_path, tiny_model):
    from tasb_ray.errors import TasbRayError
    from tasb_ray.experiments.config import load_sweep_config
    from tasb_ray.experiments.sweep import run_sweep

    path = write_sweep(tmp_path, tiny_model, grid={"sampler.samplingg": ["tas"]})
    with pytest.raises(TasbRayError, match="sampler.samplingg"):
        run_sweep(load_sweep_config(path), say=lambda s: None)
    assert not (tmp_path / "run").exists()
