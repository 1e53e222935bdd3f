"""Every committed experiment config loads: training configs as TrainingConfig, sweeps with every trial built."""

from pathlib import Path

import pytest

from tasb_ray.config import load_config, load_yaml
from tasb_ray.experiments.config import load_sweep_config
from tasb_ray.experiments.grid import check_trials
from tasb_ray.training.config import TrainingConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path):
    data = load_yaml(path)
    if "base" in data:
        sweep = load_sweep_config(path)
        base = load_yaml(sweep.base_path())
        assert check_trials(sweep.grid, base, sweep.name, extra=sweep.set)
    else:
        load_config(TrainingConfig, path)


def test_nfcorpus_uses_its_own_dev_split_and_dense_pairs():
    cfg = load_config(TrainingConfig, CONFIGS[0].parent / "nfcorpus.yaml")
    assert cfg.data.dataset == "nfcorpus" and cfg.data.dev_split == "dev"
    c = cfg.candidates
    assert (c.max_positives, c.negatives_per_query, c.positive_grade) == (16, 32, "max")
    assert c.max_pairs_per_query is not None
