"""A tiny sweep config on disk (plain module: conftest modules of two test folders share the name "conftest")."""

from __future__ import annotations

from pathlib import Path

import yaml
from beir_fixture import write_beir


def tiny_base_config(root: Path, data: Path, model: Path) -> dict:
    return {
        "name": "tiny", "work_dir": str(root / "work"), "progress": False,
        "data": {"dataset": str(data), "cache_dir": str(root / "cache"), "dev_fraction": 0.2},
        "candidates": {"depth": 10, "negatives_per_query": 3},
        "teachers": {
            "pairwise": {"kind": "ensemble", "components": [{"kind": "bm25"},
                                                            {"kind": "bi-encoder", "model": str(model)}]},
            "inbatch": {"kind": "bm25"}},
        "clusters": {"k": 2},
        "sampler": {"sampling": "tas-balanced", "batch_size": 4},
        "student": {"model": str(model), "query_max_len": 16, "passage_max_len": 32},
        "optim": {"lr": 1e-4, "max_steps": 4, "warmup_steps": 1},
        "eval": {"every": 2, "k": 100},
        "checkpoint_every": 2, "log_every": 1,
    }


def write_sweep(root: Path, model: Path, **extra) -> Path:
    data = write_beir(root / "data")
    (root / "base.yaml").write_text(yaml.safe_dump(tiny_base_config(root, data, model)))
    sweep = {"name": "tiny-seeds", "base": "base.yaml", "run_dir": str(root / "run"), "grid": {"seed": [0, 1]},
             "resources": {"cpus_per_trial": 1}, "ray": {"num_cpus": 2},
             "pipelines": {"enabled": True, "rerank_depth": 10}, **extra}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path
