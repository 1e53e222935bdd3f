"""A tiny real sweep (Ray Tune + MLflow on SQLite), run once per session and shared by the sweep tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from sweep_fixture import write_sweep


@dataclass
class TinySweep:
    root: Path
    config: Path
    result: object


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_model) -> TinySweep:
    """Two seeds; the seed-1 trial is killed (os._exit) right after its first checkpoint and must resume."""
    from tasb_ray.experiments.config import load_sweep_config
    from tasb_ray.experiments.sweep import run_sweep

    root = tmp_path_factory.mktemp("sweep")
    path = write_sweep(root, tiny_model, fault={"match": {"seed": 1}, "after_checkpoint_step": 2},
                       ray={"num_cpus": 2, "ship_shared": "always"})
    result = run_sweep(load_sweep_config(path), say=lambda s: None)
    return TinySweep(root, path, result)
