"""experiments/configs/msmarco.yaml end to end on synthetic MS MARCO (scale 0.001) with the tiny model as student,
cluster encoder and ColBERT teacher: prepare-data, the teacher file's own triples as pairs, 2 steps of training."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasb_ray.config import load_config
from tasb_ray.errors import ConfigError, DataFormatError
from tasb_ray.experiments.config import load_sweep_config
from tasb_ray.pipeline.run import open_data, pairs_stage, run_training
from tasb_ray.training.config import TrainingConfig

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "msmarco.yaml"


def _synth():
    spec = importlib.util.spec_from_file_location("msmarco_synth", ROOT / "benchmarks" / "msmarco_synth.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("msmarco-0.001")
    _synth().generate(out, 0.001, seed=0, n_topics=20)
    return out


def _overrides(tmp_path, synth, tiny_model, **extra) -> list[str]:
    sets = {"data.dataset": synth, "data.cache_dir": tmp_path / "cache", "work_dir": tmp_path / "work",
            "output_dir": tmp_path / "out", "teachers.pairwise.path": synth / "teacher.train.tsv",
            "teachers.inbatch.model": tiny_model, "student.model": tiny_model, "student.passage_max_len": 32,
            "teachers.inbatch.max_passage_len": 32, "clusters.k": 4, "sampler.batch_size": 8, "optim.max_steps": 2,
            "optim.epochs": None, "eval.batch_size": 64, "progress": False, **extra}
    return [f"{k}={'null' if v is None else v}" for k, v in sets.items()]


def test_msmarco_config_is_the_papers():
    cfg = load_config(TrainingConfig, CONFIG)
    assert (cfg.student.model, cfg.student.pooling, cfg.student.normalize) == ("distilbert-base-uncased", "cls", False)
    assert (cfg.optim.lr, cfg.sampler.batch_size, cfg.alpha, cfg.clusters.k) == (7e-6, 32, 0.75, 2000)
    assert (cfg.student.query_max_len, cfg.student.passage_max_len) == (30, 200)
    assert cfg.candidates.from_teacher_file and cfg.teachers.pairwise.kind == "file"
    assert cfg.teachers.inbatch.kind == "colbert" and cfg.sampler.sampling == "tas-balanced"
    sweep = load_sweep_config(ROOT / "experiments" / "configs" / "seeds-msmarco.yaml")
    assert sweep.base_path() == CONFIG and sweep.grid["seed"] == [0, 1, 2]
    # At MS MARCO's real size the sweep's trials evaluate on Ray Data, each with its encoder actor reserved.
    from tasb_ray.experiments.sweep import check_trial_eval
    assert not sweep.set and cfg.eval.ray_min_passages < 8_841_823
    assert (sweep.resources.eval_workers, sweep.resources.gpus_per_trial) == (1, 0.5)
    check_trial_eval(cfg, 8_841_823, sweep.resources.eval_workers)
    with pytest.raises(ConfigError, match="resources.eval_workers"):
        check_trial_eval(cfg, 8_841_823)
    with pytest.raises(ConfigError, match="needs teachers.pairwise of kind 'file'"):
        load_config(TrainingConfig, CONFIG, ["teachers.pairwise.kind=bm25", "teachers.pairwise.path=null"])


def test_msmarco_config_trains_end_to_end_on_synthetic_data(tmp_path, synth, tiny_model):
    cfg = load_config(TrainingConfig, CONFIG, _overrides(tmp_path, synth, tiny_model))
    result = run_training(cfg)
    assert result.steps == 2 and set(result.metrics) == {"dev"}
    assert 0 <= result.metrics["dev"]["MRR@10"] <= 1
    info = result.stages["pairs"]
    lines = json.loads((synth / "msmarco_synth.json").read_text())["lines"]["teacher.train.tsv"]
    # Every line of the teacher file is a training pair: no retrieval, nothing rescored or dropped.
    assert info["teacher_file"]["lines"] == info["pairs"]["pairs"] == lines
    pairs = pq.read_table(Path(info["path"]) / "pairs.parquet")
    assert pairs.schema.names == ["q_row", "pos_row", "neg_row", "pos_score", "neg_score"]
    assert str(pairs.schema.field("pos_row").type) == "int32"
    plan = pq.read_table(result.output_dir / "plan.parquet").to_pandas()
    assert len(plan) == 16 and plan["qid"].isin(open_data(cfg).queries("train")["query_id"]).all()


def test_unknown_passage_in_teacher_file_names_the_line(tmp_path, synth, tiny_model):
    bad = tmp_path / "teacher.tsv"
    lines = (synth / "teacher.train.tsv").read_text().splitlines()[:50]
    lines[30] = "\t".join(lines[30].split("\t")[:4] + ["no-such-passage"])
    bad.write_text("\n".join(lines) + "\n")
    cfg = load_config(TrainingConfig, CONFIG, _overrides(tmp_path, synth, tiny_model,
                                                         **{"teachers.pairwise.path": bad}))
    with pytest.raises(DataFormatError) as e:
        pairs_stage(cfg, open_data(cfg))
    assert str(e.value) == f"{bad}:31: unknown document id 'no-such-passage' (not in the corpus)"
