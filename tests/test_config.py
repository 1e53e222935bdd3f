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


@pytest.mark.parametrize("override, message", [
    ("alpha=1e400", "alpha: must be a finite number >= 0, got inf"),
    ("alpha=.nan", "alpha: must be a finite number >= 0, got nan"),
    ("optim.lr=-1.0", "optim.lr: must be a finite number > 0, got -1.0"),
    ("optim.lr=0", "optim.lr: must be a finite number > 0, got 0.0"),
    ("optim.epochs=-2", "optim.epochs: must be a finite number > 0 or null, got -2.0"),
    ("optim.warmup_steps=-1", "optim.warmup_steps: must be an integer >= 0, got -1"),
    ("optim.grad_clip=-0.5", "optim.grad_clip: must be a finite number > 0 or null, got -0.5"),
    ("optim.weight_decay=-1.0", "optim.weight_decay: must be a finite number >= 0, got -1.0"),
    ("eval.k=0", "eval.k: must be an integer >= 1, got 0"),
    ("eval.every=-7", "eval.every: must be an integer >= 0, got -7"),
    ("eval.metrics=[nDCG@ten]", "eval.metrics: unknown metric 'nDCG@ten'"),
    ("data.dev_fraction=7", "data.dev_fraction: must be a finite number in (0, 1), got 7.0"),
    ("data.dev_seed=-1", "data.dev_seed: must be an integer >= 0, got -1"),
    ("candidates.max_positives=0", "candidates.max_positives: must be an integer >= 1 or null, got 0"),
    ("clusters.niter=0", "clusters.niter: must be an integer >= 1, got 0"),
    ("student.attention_dropout=1.5", "student.attention_dropout: must be a finite number in [0, 1) or null"),
    ("student.score_scale=0", "student.score_scale: must be a finite number > 0, got 0.0"),
    ("log_every=0", "log_every: must be an integer >= 1, got 0"),
    ("sampler.batch_size=0", "sampler.batch_size must be an integer >= 1"),
])
def test_numbers_are_checked_at_load_by_dotted_name(override, message):
    with pytest.raises(ConfigError) as e:
        from_dict(TrainingConfig, apply_overrides({"name": "x"}, [override]))
    assert str(e.value).startswith(message), str(e.value)


def test_defaults_and_null_options_pass():
    cfg = from_dict(TrainingConfig, apply_overrides({"name": "x"}, ["optim.grad_clip=null", "alpha=0"]))
    assert cfg.optim.grad_clip is None and cfg.alpha == 0


@pytest.mark.parametrize("item, problem", [
    ("alpha={", "--set 'alpha={': invalid value"),
    ("a=!!python/object:os.system x", "could not determine a constructor"),
    ("alpha=" + "[" * 5000, "nested too deeply"),
    ("=3", "empty key"),
    ("optim..lr=3", "empty key"),
])
def test_malformed_set_value_names_the_item(item, problem):
    with pytest.raises(ConfigError) as e:
        apply_overrides({}, [item])
    assert problem in str(e.value) and "\n" not in str(e.value)


def test_config_file_encoding_nesting_and_tags_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\nalpha: 0.5 # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:2: not valid UTF-8 \(byte 0xe9 at column 17\)"):
        load_yaml(bad)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml: invalid YAML: nested too deeply"):
        load_yaml(deep)
    tag = tmp_path / "tag.yaml"
    tag.write_text("name: !!python/object/apply:os.system [echo hi]\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(tag)
    assert str(e.value).startswith(f"{tag}:1: invalid YAML: could not determine a constructor") and "\n" not in str(e.value)
