"""End to end on tiny fixtures: data → pairs → clusters → training → dev/test metrics, stages shared across seeds."""

from __future__ import annotations

import json

import yaml

from tasb_ray.cli import main
from tasb_ray.config import load_config
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.run import run_training


def _config(tmp_path, tiny_beir, tiny_model) -> dict:
    return {
        "name": "tiny", "work_dir": str(tmp_path / "work"), "output_dir": str(tmp_path / "out"), "progress": False,
        "data": {"dataset": str(tiny_beir), "cache_dir": str(tmp_path / "cache"), "dev_fraction": 0.2},
        "candidates": {"depth": 10, "negatives_per_query": 3},
        "teachers": {"pairwise": {"kind": "bm25"}, "inbatch": {"kind": "bm25"}},
        "clusters": {"k": 3},
        "sampler": {"sampling": "tas-balanced", "batch_size": 4},
        "student": {"model": str(tiny_model), "query_max_len": 16, "passage_max_len": 32},
        "optim": {"lr": 1e-4, "max_steps": 4},
        "eval": {"every": 2, "k": 20},
        "checkpoint_every": 2, "log_every": 2,
    }


def test_run_training_end_to_end_and_stage_reuse(tmp_path, tiny_beir, tiny_model):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tiny_beir, tiny_model)))
    result = run_training(load_config(TrainingConfig, path))
    assert set(result.metrics) == {"dev", "test"}
    assert 0 <= result.metrics["test"]["nDCG@10"] <= 1
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["plan_hash"] == result.plan_hash and saved["selected"] == "best"
    assert (tmp_path / "out" / "runs" / "test.trec").is_file()
    stages = sorted(p.name.split("-")[0] for p in (tmp_path / "work").iterdir())
    assert stages == ["clusters", "pairs"]
    assert saved["stages"]["pairs"]["pairs"]["queries"] > 0

    # Another seed and alpha share the stages; another cluster count adds only a clusters stage.
    run_training(load_config(TrainingConfig, path, ["seed=5", "alpha=0", f"output_dir={tmp_path / 'o2'}"]))
    assert len(list((tmp_path / "work").iterdir())) == 2
    run_training(load_config(TrainingConfig, path, ["clusters.k=2", f"output_dir={tmp_path / 'o3'}"]))
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "work").iterdir()) == ["clusters", "clusters", "pairs"]


def test_train_command(tmp_path, tiny_beir, tiny_model, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tiny_beir, tiny_model)))
    assert main(["train", str(path), "--set", "sampler.sampling=random", "--set", "eval.every=0"]) == 0
    out = capsys.readouterr().out
    assert "tiny/test" in out and "nDCG@10" in out
    assert main(["train", str(path), "--set", "optim.nope=1"]) == 2
    assert "unknown key 'optim.nope'" in capsys.readouterr().err
