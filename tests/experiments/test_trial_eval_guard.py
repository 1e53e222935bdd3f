"""Sweep guards: trials that would evaluate on Ray Data without reserved encoder actors are refused up front; a sweep
stopped early is not aggregated."""

from __future__ import annotations

import pytest

from tasb_ray.errors import ConfigError
from tasb_ray.experiments import sweep as sweep_mod
from tasb_ray.training.config import TrainingConfig


def _cfg(threshold: int) -> TrainingConfig:
    from tasb_ray.config import from_dict

    return from_dict(TrainingConfig, {"name": "t", "eval": {"ray_min_passages": threshold}})


def test_check_trial_eval_refuses_a_corpus_at_the_threshold_without_eval_workers():
    sweep_mod.check_trial_eval(_cfg(1_000_000), 8_841)          # below: in process, fine
    with pytest.raises(ConfigError, match=r"the corpus has 8841 passages \(>= eval.ray_min_passages 8841\)"):
        sweep_mod.check_trial_eval(_cfg(8_841), 8_841)
    sweep_mod.check_trial_eval(_cfg(8_841), 8_841, eval_workers=2)


def test_prepare_shared_checks_the_prepared_corpus(prepared_tiny_beir, monkeypatch):
    ds = prepared_tiny_beir
    built = []
    monkeypatch.setattr(sweep_mod, "open_data", lambda cfg: ds)
    monkeypatch.setattr(sweep_mod, "prepare_shared_stages",
                        lambda cfg, use_ray: built.append(cfg) or {"data": {"path": str(ds.root)}})
    n = ds.manifest["counts"]["corpus"]
    assert sweep_mod.prepare_shared({"a": _cfg(n + 1)}, False, say=lambda s: None)
    assert len(built) == 1
    with pytest.raises(ConfigError, match=f"has {n} passages"):
        sweep_mod.prepare_shared({"a": _cfg(n + 1), "b": _cfg(n)}, False, say=lambda s: None)
    assert len(built) == 1      # refused before any stage of any config was built


def test_a_sweep_stopped_with_trials_left_is_interrupted_not_aggregated():
    from types import SimpleNamespace as NS

    def grid(*statuses):
        trials = [NS(status=s) for s in statuses]
        return NS(_experiment_analysis=NS(trials=trials))

    assert sweep_mod.interrupted(grid("TERMINATED", "PENDING"))
    assert sweep_mod.interrupted(grid("RUNNING", "TERMINATED"))
    assert not sweep_mod.interrupted(grid("TERMINATED", "ERROR"))
    assert sweep_mod.interrupted([NS(config={"trial": {}}), NS(config=None)])   # no analysis: never-reported trial
    assert not sweep_mod.interrupted([NS(config={"trial": {}})])
