"""Evaluation at corpus scale: above ``ray_min_passages`` the corpus is encoded on Ray Data (sharded, resumable).

Tiny random BERT, tiny BEIR corpus (32 passages), threshold 0 so the Ray path runs: same metrics as in process,
and a rerun after an interrupted encoding keeps the finished shards.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from tasb_ray.config import from_dict
from tasb_ray.distributed.encode import InjectedFailure
from tasb_ray.distributed.options import RayOptions
from tasb_ray.evaluation import corpus_index as ci
from tasb_ray.evaluation.corpus_index import CorpusIndexOptions, corpus_index
from tasb_ray.evaluation.first_stage import dense_search
from tasb_ray.evaluation.metrics import evaluate
from tasb_ray.models.encoder import BertDot
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import EvalData, TrainData, Trainer

METRICS = ["nDCG@10", "MRR@10", "R@10", "R@100"]
RAY = RayOptions(shard_rows=7)  # 32 passages -> shards of 7, 7, 7, 7, 4


@pytest.fixture(scope="module")
def prepared(prepared_tiny_beir):
    return prepared_tiny_beir


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return BertDot(str(tiny_model)).eval()


def _metrics(encoder, index, ds, split="test"):
    run = dense_search(encoder, index, ds.queries(split), k=100, batch_size=8)
    return evaluate(run, ds.qrels(split), METRICS, 1), run


def test_ray_path_gives_the_in_process_metrics_and_resumes(ray_local, prepared, encoder, tmp_path, monkeypatch):
    corpus = prepared.corpus()
    local_stats, ray_stats = {}, {}
    local = corpus_index(encoder, corpus, CorpusIndexOptions(batch_size=8), stats=local_stats)
    assert local_stats["path"] == "in-process"
    want, want_run = _metrics(encoder, local, prepared)

    # An evaluation killed after two shards: they are on disk, the manifest is not.
    monkeypatch.setattr(ci, "encode_corpus", functools.partial(ci.encode_corpus, fail_after_shards=2))
    opts = CorpusIndexOptions(ray_min_passages=0, batch_size=8)
    with pytest.raises(InjectedFailure):
        corpus_index(encoder, corpus, opts, dataset=prepared, work_dir=tmp_path / "eval",
                     ray=RayOptions(shard_rows=7, num_actors=1))
    monkeypatch.undo()
    (shards_dir,) = (tmp_path / "eval").glob("corpus-*")
    assert not (shards_dir / "manifest.json").exists() and len(list(shards_dir.glob("shard-*.parquet"))) == 2

    index = corpus_index(encoder, corpus, opts, dataset=prepared, work_dir=tmp_path / "eval", ray=RAY,
                         stats=ray_stats)
    assert ray_stats["path"] == "ray" and ray_stats["reused_shards"] == 2 and ray_stats["encoded_shards"] == 3
    assert ray_stats["shards"] == str(shards_dir)
    got, got_run = _metrics(encoder, index, prepared)
    assert got == pytest.approx(want, abs=1e-9)
    # Same ranking; scores equal up to float rounding (the Ray path pads each text to its own length).
    merged = want_run.merge(got_run, on=["query_id", "doc_id"], suffixes=("_local", "_ray"))
    assert len(merged) == len(want_run) == len(got_run)
    np.testing.assert_allclose(merged["score_ray"], merged["score_local"], atol=1e-5)
    n = len(corpus)
    np.testing.assert_allclose(index.index.reconstruct_n(0, n), local.index.reconstruct_n(0, n), atol=1e-5)
    assert list(index.doc_ids) == list(corpus["doc_id"])

    # Same weights again: every shard reused, nothing encoded.
    again: dict = {}
    corpus_index(encoder, corpus, opts, dataset=prepared, work_dir=tmp_path / "eval", ray=RAY, stats=again)
    assert again["reused_shards"] == 5 and again["encoded_shards"] == 0


def test_ray_path_with_a_compressed_index(ray_local, prepared, encoder, tmp_path):
    corpus = prepared.corpus()
    opts = CorpusIndexOptions(index="ivf-pq", ray_min_passages=0, batch_size=8)
    index = corpus_index(encoder, corpus, opts, dataset=prepared, work_dir=tmp_path / "eval", ray=RAY)
    assert index.meta["kind"] == "ivf-pq" and index.index.ntotal == len(corpus)
    in_process = corpus_index(encoder, corpus, CorpusIndexOptions(index="ivf-pq", batch_size=8))
    # The same seeded training sample from the shards as from memory: the same codes up to float rounding.
    a, b = _metrics(encoder, index, prepared)[0], _metrics(encoder, in_process, prepared)[0]
    assert a == pytest.approx(b, abs=1e-6)


def test_ray_path_needs_the_dataset(encoder, prepared):
    with pytest.raises(Exception, match="ray_min_passages 0.*prepared dataset"):
        corpus_index(encoder, prepared.corpus(), CorpusIndexOptions(ray_min_passages=0))


def test_trainer_evaluates_through_ray_above_the_threshold(ray_local, prepared, tiny_model, tmp_path):
    queries, corpus = prepared.queries("train"), prepared.corpus()
    qrels = prepared.qrels("train")
    pairs = pd.DataFrame({"qid": qrels["query_id"], "pos_pid": qrels["doc_id"],
                          "neg_pid": corpus["doc_id"].iloc[0], "pos_score": 1.0, "neg_score": 0.0})
    pairs = pairs[pairs["pos_pid"] != pairs["neg_pid"]].reset_index(drop=True)
    data = TrainData(pairs, dict(zip(queries["query_id"], queries["text"])),
                     dict(zip(corpus["doc_id"], corpus["text"])))
    splits = [EvalData(s, corpus, prepared.queries(s), prepared.qrels(s), dataset=prepared) for s in ("dev", "test")]
    results = {}
    for name, threshold in (("local", 10**9), ("ray", 0)):
        cfg = from_dict(TrainingConfig, {"alpha": 0, "progress": False, "student": {"model": str(tiny_model)},
                                         "sampler": {"sampling": "random", "batch_size": 2},
                                         "optim": {"max_steps": 0}, "eval": {"ray_min_passages": threshold}})
        trainer = Trainer(cfg, data, tmp_path / name, ray=RAY)
        results[name] = trainer.evaluate_splits(splits)
        assert trainer.eval_index_stats["path"] == ("in-process" if name == "local" else "ray")
        assert trainer.eval_index_stats["index"] == "flat"
    for split in ("dev", "test"):
        assert results["ray"][split] == pytest.approx(results["local"][split], abs=1e-9)
    assert (tmp_path / "ray" / "eval-vectors" / "model").is_dir()
