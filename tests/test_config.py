"""Typed configs from YAML: number fields, unknown keys, overrides."""

from __future__ import annotations

import pytest

from tasb_ray.config import ConfigError, apply_overrides, from_dict, load_yaml
from tasb_ray.training.config import TrainingConfig


def test_float_field_takes_yaml_exponent_without_dot(tmp_path):
    # YAML 1.1 (PyYAML) reads "6e-5" as a string, "6.0e-5" as a float: both must mean the number.
    path = tmp_path / "c.yaml"
    path.write_text("name: x\noptim:\n  lr: 6e-5\n")
    data = load_yaml(path)
    assert isinstance(data["optim"]["lr"], str)
    assert from_dict(TrainingConfig, data).optim.lr == pytest.approx(6e-5)
    cfg = from_dict(TrainingConfig, apply_overrides({"name": "x"}, ["optim.lr=3e-4"]))
    assert cfg.optim.lr == pytest.approx(3e-4)


def test_float_field_rejects_text_by_name():
    with pytest.raises(ConfigError, match="optim.lr"):
        from_dict(TrainingConfig, {"name": "x", "optim": {"lr": "fast"}})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="optim.lrr"):
        from_dict(TrainingConfig, {"name": "x", "optim": {"lrr": 1e-5}})
