"""End to end on tiny fixtures: data → pairs → clusters → training → dev/test metrics, stages shared across seeds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tasb_ray.cli import main
from tasb_ray.config import from_dict, load_config
from tasb_ray.distributed.options import RayOptions
from tasb_ray.errors import TasbRayError
from tasb_ray.pipeline.run import clusters_stage, open_data, pairs_stage, prepare_shared_stages, run_training
from tasb_ray.training.clusters import read_clusters
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.pairs import read_pairs


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


def _write(tmp_path, tiny_beir, tiny_model) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, tiny_beir, tiny_model)))
    return path


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
    # Issue 14: plan statistics, the in-batch scale, cluster quality and projection, the balance per logging step.
    plan = saved["plan_stats"]
    assert plan["batches"] == 4 and 0 <= plan["single_cluster_batch_share"] <= 1 and len(plan["bin_hist"]) == 10
    assert saved["inbatch_scale"]["mode"] == "match-loss" and saved["inbatch_scale"]["factor"] > 0
    quality = saved["stages"]["clusters"]["quality"]
    assert set(quality) == {"silhouette", "ami_seed", "ami_other_seed"}
    proj = pd.read_parquet(Path(saved["stages"]["clusters"]["path"]) / "clusters_2d.parquet")
    assert list(proj.columns) == ["qid", "x", "y", "cluster"] and len(proj) == saved["stages"]["clusters"]["queries"]
    logs = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    train = [e for e in logs if e["split"] == "train"]
    assert train and all({"loss_ratio", "margin_sd_pair", "margin_sd_inbatch"} <= set(e) for e in train)
    # The selected model (best on dev) carries the card with the metrics; the last step's model says where they are.
    card = (tmp_path / "out" / "best" / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "sentence-transformers" and "base_model" not in front  # a local base model
    results = {r["dataset"]["split"]: r for r in front["model-index"][0]["results"]}
    ndcg = next(m["value"] for m in results["test"]["metrics"] if m["name"] == "nDCG@10")
    assert ndcg == pytest.approx(result.metrics["test"]["nDCG@10"])
    assert result.plan_hash in card and f"tasb-ray train {tmp_path / 'out' / 'config.yaml'}" in card
    assert "sampling: tas-balanced" in card and "kind: bm25" in card and "SentenceTransformer(" in card
    last = (tmp_path / "out" / "model" / "README.md").read_text()
    assert "model-index" not in last and "belong to `best/`" in last
    assert (tmp_path / "out" / "best" / "modules.json").is_file()

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


# --- shared stages: teacher vectors, the Ray path, prepared once for a sweep -----------------------------------


@pytest.fixture(scope="module")
def mean_model(tiny_model, tmp_path_factory):
    """The tiny BERT with mean pooling: its CLS vectors are near-identical for any text, which would make teacher
    z-scores and k-means assignments hinge on float rounding."""
    from tasb_ray.models.encoder import SPEC_FILE

    path = tmp_path_factory.mktemp("mean") / "tiny-mean"
    shutil.copytree(tiny_model, path)
    spec = json.loads((path / SPEC_FILE).read_text())
    (path / SPEC_FILE).write_text(json.dumps({**spec, "pooling": "mean"}))
    return path


def _shared_config(tmp_path, tiny_beir, model, work: str) -> TrainingConfig:
    teacher = {"kind": "ensemble", "components": [
        {"kind": "bm25"}, {"kind": "bi-encoder", "model": str(model), "similarity": "cosine", "max_query_len": 12,
                           "max_passage_len": 24, "weight": 0.5}]}
    d = _config(tmp_path, tiny_beir, model)
    d.update(work_dir=str(tmp_path / work), teachers={"pairwise": teacher, "inbatch": teacher}, alpha=0.5)
    d["optim"]["max_steps"] = 2
    d["eval"]["every"] = 0
    return from_dict(TrainingConfig, d)


def test_pairs_stage_key_is_unchanged(tmp_path, tiny_beir, tiny_model):
    # Pairs stages on disk (SciFact's took 13 min) are found by this key: it must not depend on how they are built.
    cfg = load_config(TrainingConfig, _write(tmp_path, tiny_beir, tiny_model))
    with pytest.raises(TasbRayError, match=r"'pairs' is not prepared: .*pairs-1b7c79324b36"):
        pairs_stage(cfg, open_data(cfg), use_ray=True, require_cached=True)


def test_shared_stages_on_ray_equal_local_and_trials_only_read_them(ray_local, tmp_path, tiny_beir, mean_model,
                                                                     monkeypatch):
    from tasb_ray.pipeline.teacher_vectors import PASSAGE_FILE, QUERY_FILE, read_vectors
    from tasb_ray.teachers.bi_encoder import BiEncoderTeacher

    local = _shared_config(tmp_path, tiny_beir, mean_model, "work-local")
    ds = open_data(local)
    want_pairs, _ = pairs_stage(local, ds)  # builds the teacher-vectors stage in process on the way
    want_clusters, _ = clusters_stage(local, ds)
    want_vectors = next((tmp_path / "work-local").glob("teacher-vectors-*"))

    remote = _shared_config(tmp_path, tiny_beir, mean_model, "work-ray")
    # One actor per pool: each actor process imports torch and loads the model, seconds on a busy 2-core machine.
    ray_options = RayOptions(num_actors=1, cpus_per_actor=1, shard_rows=7)
    stages = prepare_shared_stages(remote, use_ray=True, ray=ray_options)
    assert prepare_shared_stages(remote) == stages  # all found: nothing built (a local build would differ in info)
    work = tmp_path / "work-ray"
    got_pairs, got_clusters = Path(stages["pairs"]["path"]), Path(stages["clusters"]["path"])
    assert all("path" in v for v in stages.values())  # what a sweep driver ships to its trials
    vectors = stages["teacher-vectors/pairwise/teacher.components[1]"]
    assert stages["teacher-vectors/inbatch/teacher.components[1]"] == vectors  # one stage serves both roles
    assert vectors["built_with"] == "ray" and stages["data"]["path"] == str(open_data(remote).root)
    got_vectors = Path(vectors["path"])
    assert (got_pairs.name, got_clusters.name, got_vectors.name) == (want_pairs.name, want_clusters.name,
                                                                      want_vectors.name)
    assert sorted(p.name for p in work.iterdir()) == sorted([got_pairs.name, got_clusters.name, got_vectors.name])
    for f in (PASSAGE_FILE, QUERY_FILE):
        (want_ids, want), (got_ids, got) = read_vectors(want_vectors / f), read_vectors(got_vectors / f)
        assert got_ids == want_ids
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    want_table, got_table = read_pairs(want_pairs / "pairs.parquet"), read_pairs(got_pairs / "pairs.parquet")
    pd.testing.assert_frame_equal(got_table[["qid", "pos_pid", "neg_pid"]], want_table[["qid", "pos_pid", "neg_pid"]])
    for col in ("pos_score", "neg_score"):
        np.testing.assert_allclose(got_table[col], want_table[col], atol=1e-5, rtol=0)
    assert want_table["pos_score"].std() > 0.1
    pd.testing.assert_frame_equal(read_clusters(got_clusters / "clusters.parquet"),
                                  read_clusters(want_clusters / "clusters.parquet"))

    # A trial reads the prepared stages and never encodes a teacher text (the vectors are attached).
    def no_encoding(self, texts, kind):
        raise AssertionError(f"the in-batch teacher encoded {len(texts)} {kind} texts")

    monkeypatch.setattr(BiEncoderTeacher, "encode", no_encoding)
    result = run_training(remote, require_cached=True)
    assert result.steps == 2 and result.stages["teacher_vectors"] == {"teacher.components[1]": str(got_vectors)}
    assert sorted(p.name for p in work.iterdir()) == sorted([got_pairs.name, got_clusters.name, got_vectors.name])

    # Where the shared work was not prepared, a trial stops naming the stage instead of redoing it.
    fresh = _shared_config(tmp_path, tiny_beir, mean_model, "work-empty")
    with pytest.raises(TasbRayError, match="shared stage 'pairs' is not prepared"):
        run_training(fresh, require_cached=True)
    shutil.copytree(want_pairs, tmp_path / "work-empty" / want_pairs.name)
    shutil.copytree(want_clusters, tmp_path / "work-empty" / want_clusters.name)
    with pytest.raises(TasbRayError, match="shared stage 'teacher-vectors' is not prepared"):
        run_training(fresh, require_cached=True)
