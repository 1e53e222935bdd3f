import numpy as np
import pandas as pd
import pytest

from tasb_ray.data.prepare import prepare_dataset
from tasb_ray.errors import ConfigError
from tasb_ray.training.candidates import (
    first_stage_candidates,
    merge_candidates,
    read_candidates,
    run_to_candidates,
    write_candidates,
)


@pytest.fixture()
def ds(tiny_beir, cache_dir):
    return prepare_dataset(str(tiny_beir), cache_dir=cache_dir)


@pytest.fixture(scope="module")
def encoder(tiny_model):
    from tasb_ray.models.encoder import BertDot

    return BertDot(str(tiny_model))


def check_shape(cands: pd.DataFrame, depth: int, n_sources: int = 1) -> None:
    assert list(cands.columns) == ["qid", "pid", "source", "rank"]
    assert not cands.duplicated(["qid", "pid"]).any()
    assert (cands.groupby("qid").size() <= depth * n_sources).all()
    assert cands["rank"].between(1, depth).all()


def test_bm25_candidates_find_relevant_docs(ds, tmp_path):
    cands = first_stage_candidates(ds, "train", sources=("bm25",), depth=3)
    check_shape(cands, 3)
    assert set(cands["source"]) == {"bm25"}
    assert set(cands["qid"]) == set(ds.queries("train")["query_id"])
    # Every tiny_beir query shares its topic word with its first relevant document: found in the top 3.
    qrels = ds.qrels("train")
    found = qrels.merge(cands, left_on=["query_id", "doc_id"], right_on=["qid", "pid"])
    assert set(found["query_id"]) == set(qrels["query_id"])
    write_candidates(tmp_path / "c.parquet", cands)
    pd.testing.assert_frame_equal(read_candidates(tmp_path / "c.parquet"), cands)


def test_dense_and_merged_sources(ds, encoder):
    dense = first_stage_candidates(ds, "train", sources=("dense",), depth=5, encoder=encoder, batch_size=8)
    check_shape(dense, 5)
    assert (dense.groupby("qid").size() == 5).all()  # dense search always fills depth

    # Precomputed vectors (e.g. from a Ray stage) give the same candidates without an encoder.
    pvec = encoder.encode(ds.corpus()["text"].tolist(), kind="passage", batch_size=8)
    qvec = encoder.encode(ds.queries("train")["text"].tolist(), kind="query", batch_size=8)
    again = first_stage_candidates(ds, "train", sources=("dense",), depth=5, passage_vectors=pvec, query_vectors=qvec)
    pd.testing.assert_frame_equal(again, dense)

    bm25 = first_stage_candidates(ds, "train", sources=("bm25",), depth=5)
    both = first_stage_candidates(ds, "train", sources=("bm25", "dense"), depth=5, passage_vectors=pvec,
                                  encoder=encoder)
    check_shape(both, 5, n_sources=2)
    assert set(both["source"]) <= {"bm25", "dense", "bm25+dense"}
    keys = lambda df: set(zip(df["qid"], df["pid"]))  # noqa: E731
    assert keys(both) == keys(bm25) | keys(dense)
    shared = both[both["source"] == "bm25+dense"]
    assert len(shared) == len(keys(bm25) & keys(dense))


def test_merge_keeps_best_rank_and_names_sources():
    bm25 = pd.DataFrame({"qid": ["q", "q", "q"], "pid": ["a", "b", "c"], "source": "bm25", "rank": [1, 2, 3]})
    dense = pd.DataFrame({"qid": ["q", "q"], "pid": ["c", "d"], "source": "dense", "rank": [1, 2]})
    got = merge_candidates({"bm25": bm25, "dense": dense})
    assert got.to_dict("list") == {"qid": ["q"] * 4, "pid": ["a", "c", "b", "d"],
                                   "source": ["bm25", "bm25+dense", "bm25", "dense"], "rank": [1, 1, 2, 2]}


def test_ranks_follow_score_with_pid_tiebreak():
    run = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["z", "a", "m"], "score": [1.0, 1.0, 2.0]})
    got = run_to_candidates(run, "bm25")
    assert got["pid"].tolist() == ["m", "a", "z"] and got["rank"].tolist() == [1, 2, 3]


def test_config_errors(ds):
    with pytest.raises(ConfigError, match="unknown candidate source"):
        first_stage_candidates(ds, "train", sources=("splade",))
    with pytest.raises(ConfigError, match="needs an encoder"):
        first_stage_candidates(ds, "train", sources=("dense",))
    with pytest.raises(ConfigError, match="depth"):
        first_stage_candidates(ds, "train", depth=0)
    with pytest.raises(Exception, match="passage_vectors has shape"):
        first_stage_candidates(ds, "train", sources=("dense",), passage_vectors=np.zeros((2, 4), np.float32),
                               query_vectors=np.zeros((len(ds.queries("train")), 4), np.float32))
