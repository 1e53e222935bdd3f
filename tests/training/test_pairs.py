import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import PAIRS_COLUMNS
from tasb_ray.training.pairs import (
    attach_texts,
    build_triples,
    join_scores,
    pair_stats,
    query_batches,
    read_pairs,
    read_triples,
    score_pairs,
    score_triples,
    unique_pairs,
    write_pairs,
    write_triples,
)
from tasb_ray.training.sampling import BatchSampler, SamplerConfig


class OverlapTeacher:
    """Word-overlap scorer, z-normalised per query over the rows of a batch (like the ensemble teacher).

    Records every (qid, pid) it scores and asserts that no query is spread over two batches.
    """

    def __init__(self, normalise: bool = True):
        self.normalise = normalise
        self.scored: list[tuple[str, str]] = []
        self.batches: list[int] = []
        self.seen_qids: set[str] = set()

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        assert list(batch.columns[:4]) == ["qid", "pid", "query", "passage"]
        qids = set(batch["qid"])
        assert not qids & self.seen_qids, f"query split across batches: {qids & self.seen_qids}"
        self.seen_qids |= qids
        self.batches.append(len(batch))
        self.scored += list(zip(batch["qid"], batch["pid"]))
        raw = np.array([len(set(q.split()) & set(p.split())) + 0.01 * len(p) for q, p in
                        zip(batch["query"], batch["passage"])], dtype=np.float64)
        if not self.normalise:
            return raw
        out = np.empty_like(raw)
        for q in qids:
            m = (batch["qid"] == q).to_numpy()
            out[m] = (raw[m] - raw[m].mean()) / (raw[m].std() + 1e-6)
        return out


def toy_data(n_queries: int = 6, n_cands: int = 12):
    """Queries q0..q{n-1}; candidates c0..c{n_cands-1} per query; d0, d1 relevant, d2 judged non-relevant."""
    qids = [f"q{i}" for i in range(n_queries)]
    cands = pd.DataFrame([(q, f"{q}c{j}", "bm25", j + 1) for q in qids for j in range(n_cands)],
                         columns=["qid", "pid", "source", "rank"])
    # Judged docs are also in the candidates, so the exclusion is what keeps them out.
    qrels = pd.DataFrame([(q, f"{q}c{j}", rel) for q in qids for j, rel in ((0, 2), (1, 1), (2, 0))],
                         columns=["query_id", "doc_id", "relevance"])
    words = ["heart", "brain", "virus", "tumor", "gene", "cell"]
    queries = pd.DataFrame({"query_id": qids, "text": [f"{words[i % 6]} question {i}" for i in range(n_queries)]})
    pids = cands["pid"].unique()
    texts = [f"{words[i % 6]} {'x ' * (i % 5)}passage" for i in range(len(pids))]
    corpus = pd.DataFrame({"doc_id": pids, "text": texts})
    return cands, qrels, queries, corpus


def test_triples_structure_and_exclusions():
    cands, qrels, _, _ = toy_data()
    t = build_triples(cands, qrels, negatives_per_query=4, seed=0)
    assert list(t.columns) == ["qid", "pos_pid", "neg_pid"]
    judged = set(zip(qrels["query_id"], qrels["doc_id"]))
    positives = set(zip(qrels[qrels.relevance > 0]["query_id"], qrels[qrels.relevance > 0]["doc_id"]))
    assert not set(zip(t["qid"], t["neg_pid"])) & judged  # no judged doc (positive or not) as negative
    assert set(zip(t["qid"], t["pos_pid"])) == positives  # every positive is paired
    per_q = t.groupby("qid")
    assert (per_q["neg_pid"].nunique() == 4).all()
    # every positive × every sampled negative
    assert (per_q.size() == 2 * 4).all()
    assert t.attrs["stats"]["triples"] == len(t) and t.attrs["stats"]["queries_kept"] == 6

    loose = build_triples(cands, qrels, negatives_per_query=100, seed=0, exclude_judged=False)
    assert ("q0", "q0c2") in set(zip(loose["qid"], loose["neg_pid"]))  # judged non-relevant allowed
    assert not set(zip(loose["qid"], loose["neg_pid"])) & positives
    assert loose.groupby("qid")["neg_pid"].nunique().eq(12 - 2).all()  # fewer than asked: all of them


def test_triples_deterministic_and_order_independent():
    cands, qrels, _, _ = toy_data(n_queries=10, n_cands=30)
    a = build_triples(cands, qrels, negatives_per_query=5, seed=3)
    shuffled = build_triples(cands.sample(frac=1, random_state=1), qrels.sample(frac=1, random_state=2),
                             negatives_per_query=5, seed=3)
    pd.testing.assert_frame_equal(a, shuffled)
    # duplicated candidate rows (e.g. unmerged sources) change nothing either
    pd.testing.assert_frame_equal(a, build_triples(pd.concat([cands, cands]), qrels, negatives_per_query=5, seed=3))
    b = build_triples(cands, qrels, negatives_per_query=5, seed=4)
    assert not a.equals(b)


def test_triples_drop_queries_without_positive_or_negative(caplog):
    cands, qrels, _, _ = toy_data(n_queries=3, n_cands=3)
    # All three candidates of each query are judged, so nothing is left as a negative unless added:
    # q0 has no negative; q1's docs are all judged 0 (no positive); q2 gets an unjudged candidate (kept);
    # q9 has candidates but no judgements (no positive).
    qrels.loc[qrels.query_id == "q1", "relevance"] = 0
    cands = pd.concat([cands, pd.DataFrame({"qid": ["q2", "q9"], "pid": ["extra", "x"]})])
    with caplog.at_level("WARNING"):
        t = build_triples(cands, qrels, negatives_per_query=2, seed=0)
    assert set(t["qid"]) == {"q2"}
    s = t.attrs["stats"]
    assert (s["queries"], s["queries_kept"], s["dropped_no_positive"], s["dropped_no_negative"]) == (4, 1, 2, 1)
    assert "dropped" in caplog.text


def test_max_positives_prefers_higher_grade():
    cands, qrels, _, _ = toy_data(n_queries=2)
    t = build_triples(cands, qrels, negatives_per_query=3, seed=0, max_positives=1)
    assert t.groupby("qid")["pos_pid"].unique().map(list).to_dict() == {"q0": ["q0c0"], "q1": ["q1c0"]}
    with pytest.raises(ConfigError, match="negatives_per_query"):
        build_triples(cands, qrels, negatives_per_query=0, seed=0)


def test_query_batches_pack_whole_queries():
    qids = np.array(["a"] * 3 + ["b"] * 2 + ["c"] * 7 + ["d"] * 1 + ["e"] * 2)
    assert query_batches(qids, 5) == [(0, 5), (5, 12), (12, 15)]
    assert query_batches(qids, 100) == [(0, 15)]
    assert query_batches(qids[:0], 4) == []
    with pytest.raises(TasbRayError, match="contiguous"):
        query_batches(np.array(["a", "b", "a"]), 2)


def test_score_triples_scores_each_pair_once_without_splitting_queries():
    cands, qrels, queries, corpus = toy_data()
    triples = build_triples(cands, qrels, negatives_per_query=5, seed=1)
    teacher = OverlapTeacher()
    scored = score_triples(triples, queries, corpus, teacher, batch_size=16)
    assert list(scored.columns) == list(PAIRS_COLUMNS)
    pd.testing.assert_frame_equal(scored[["qid", "pos_pid", "neg_pid"]], triples)
    unique = unique_pairs(triples)
    assert len(teacher.scored) == len(set(teacher.scored)) == len(unique) == 6 * 7
    assert len(teacher.batches) > 1 and max(teacher.batches) <= 16

    # One call over all pairs gives the same numbers: batching is invisible to a per-query normaliser.
    whole = attach_texts(unique, queries, corpus)
    single = join_scores(triples, whole[["qid", "pid"]].assign(score=OverlapTeacher().score_batch(whole)))
    pd.testing.assert_frame_equal(scored, single)
    # A query larger than the batch size is scored alone, still whole.
    tiny = OverlapTeacher()
    pd.testing.assert_frame_equal(score_triples(triples, queries, corpus, tiny, batch_size=2), single)
    assert tiny.batches == [7] * 6


def test_missing_ids_are_named():
    cands, qrels, queries, corpus = toy_data(n_queries=2)
    triples = build_triples(cands, qrels, negatives_per_query=2, seed=0)
    with pytest.raises(TasbRayError, match="query id 'q1' is not in the queries table"):
        score_triples(triples, queries[queries.query_id != "q1"], corpus, OverlapTeacher())
    pid = triples["neg_pid"].iloc[0]
    with pytest.raises(TasbRayError, match=f"passage id '{pid}' is not in the corpus"):
        score_triples(triples, queries, corpus[corpus.doc_id != pid], OverlapTeacher())
    scored = score_pairs(unique_pairs(triples), queries, corpus, OverlapTeacher(normalise=False))
    with pytest.raises(TasbRayError, match="no score for query"):
        join_scores(triples, scored.iloc[1:])
    with pytest.raises(TasbRayError, match="more than once"):
        join_scores(triples, pd.concat([scored, scored.iloc[:1]]))


def test_pair_stats_hand_example():
    pairs = pd.DataFrame({"qid": ["a", "a", "a", "b"], "pos_pid": ["p"] * 4, "neg_pid": ["n1", "n2", "n3", "n1"],
                          "pos_score": [3.0, 3.0, 1.0, 2.0], "neg_score": [1.0, 2.0, 2.0, 2.0]})
    s = pair_stats(pairs)
    assert s == {"queries": 2, "pairs": 4, "pairs_per_query_mean": 2.0, "pairs_per_query_min": 1,
                 "pairs_per_query_max": 3, "margin_mean": 0.5, "margin_sd": pytest.approx(np.std([2, 1, -1, 0])),
                 "margin_min": -1.0, "margin_max": 2.0, "negative_margin_share": 0.25}
    assert pair_stats(pairs.iloc[:0])["pairs"] == 0


def test_roundtrip_and_sampler(tmp_path):
    cands, qrels, queries, corpus = toy_data()
    triples = build_triples(cands, qrels, negatives_per_query=3, seed=0)
    write_triples(tmp_path / "t.parquet", triples)
    pd.testing.assert_frame_equal(read_triples(tmp_path / "t.parquet"), triples)
    pairs = score_triples(triples, queries, corpus, OverlapTeacher())
    write_pairs(tmp_path / "p.parquet", pairs)
    back = read_pairs(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(back, pairs)
    batch = next(iter(BatchSampler(back, SamplerConfig(sampling="random", batch_size=4))))
    assert len(batch) == 4


def test_positive_grade_selects_by_grade_and_keeps_other_grades_out_of_negatives():
    cands, qrels, _, _ = toy_data(n_queries=3)
    # q0: grades 2 and 1; q1: both grade 1 (max is 1, so both stay); q2: grades 2 and 1.
    qrels.loc[(qrels.query_id == "q1") & (qrels.doc_id == "q1c0"), "relevance"] = 1
    top = build_triples(cands, qrels, negatives_per_query=20, seed=0, positive_grade="max")
    assert top.groupby("qid")["pos_pid"].unique().map(sorted).to_dict() == {
        "q0": ["q0c0"], "q1": ["q1c0", "q1c1"], "q2": ["q2c0"]}
    # The grade-1 documents left out as positives are still judged: never negatives.
    assert not {("q0", "q0c1"), ("q2", "q2c1")} & set(zip(top["qid"], top["neg_pid"]))
    two = build_triples(cands, qrels, negatives_per_query=20, seed=0, positive_grade=2)
    assert set(two["qid"]) == {"q0", "q2"} and set(two["pos_pid"]) == {"q0c0", "q2c0"}
    assert two.attrs["stats"]["dropped_no_positive"] == 1
    default = build_triples(cands, qrels, negatives_per_query=20, seed=0)
    assert set(default["pos_pid"]) >= {"q0c1", "q2c1"}
    with pytest.raises(ConfigError, match="positive_grade"):
        build_triples(cands, qrels, negatives_per_query=2, seed=0, positive_grade="top")


def test_max_pairs_per_query_caps_uniformly_and_leaves_other_draws_alone():
    cands, qrels, _, _ = toy_data(n_queries=5, n_cands=30)
    full = build_triples(cands, qrels, negatives_per_query=10, seed=1)     # 2 positives x 10 negatives
    capped = build_triples(cands, qrels, negatives_per_query=10, seed=1, max_pairs_per_query=7)
    assert (capped.groupby("qid").size() == 7).all()
    assert capped.attrs["stats"]["triples_capped"] == len(full) - len(capped) == 5 * 13
    # A subset of the uncapped triples: the negatives drawn before the cap are the same ones.
    assert set(map(tuple, capped.to_numpy())) <= set(map(tuple, full.to_numpy()))
    assert capped.equals(build_triples(cands, qrels, negatives_per_query=10, seed=1, max_pairs_per_query=7))
    assert not capped.equals(build_triples(cands, qrels, negatives_per_query=10, seed=2, max_pairs_per_query=7))
    # A cap above every query's count changes nothing.
    pd.testing.assert_frame_equal(full, build_triples(cands, qrels, negatives_per_query=10, seed=1,
                                                      max_pairs_per_query=100))
    with pytest.raises(ConfigError, match="max_pairs_per_query"):
        build_triples(cands, qrels, negatives_per_query=2, seed=0, max_pairs_per_query=0)


def test_candidates_config_checks_the_new_fields():
    from tasb_ray.config import from_dict
    from tasb_ray.training.config import TrainingConfig

    cfg = from_dict(TrainingConfig, {"candidates": {"positive_grade": "max", "max_pairs_per_query": 64}})
    assert cfg.candidates.positive_grade == "max"
    assert from_dict(TrainingConfig, {"candidates": {"positive_grade": 2}}).candidates.positive_grade == 2
    with pytest.raises(ConfigError, match=r"candidates\.positive_grade"):
        from_dict(TrainingConfig, {"candidates": {"positive_grade": "best"}})
    with pytest.raises(ConfigError, match=r"candidates\.max_pairs_per_query"):
        from_dict(TrainingConfig, {"candidates": {"max_pairs_per_query": 0}})
