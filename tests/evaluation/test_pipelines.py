"""run_pipelines on the tiny BEIR fixture: tiny random BERT, BM25 and a BM25 teacher as reranker."""

import numpy as np
import pandas as pd
import pytest

from tasb_ray.data.prepare import prepare_dataset
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.evaluation.first_stage import build_dense_index
from tasb_ray.evaluation.fusion import interpolate, reciprocal_rank_fusion, sort_run
from tasb_ray.evaluation.metrics import evaluate
from tasb_ray.evaluation.pipelines import PIPELINES, STAGES, PipelineOptions, rerank_query, run_pipelines
from tasb_ray.retrieval.bm25 import BM25Index
from tasb_ray.teachers.bm25 import BM25Teacher

RERANK_DEPTH = 10


@pytest.fixture(scope="module")
def world(tiny_model, tmp_path_factory):
    """The dataset's train split (20 queries, 32 passages) and every pipeline input."""
    from beir_fixture import write_beir

    from tasb_ray.models.encoder import BertDot

    root = tmp_path_factory.mktemp("pipelines")
    ds = prepare_dataset(str(write_beir(root / "beir")), cache_dir=root / "cache")
    corpus = ds.corpus()
    encoder = BertDot(str(tiny_model))
    return {
        "queries": ds.queries("train"), "qrels": ds.qrels("train"), "encoder": encoder,
        "bm25": BM25Index(corpus.doc_id.to_numpy(), corpus.text.tolist()),
        "dense_index": build_dense_index(encoder, corpus, batch_size=16),
        "corpus_text": dict(zip(corpus.doc_id, corpus.text)), "reranker": BM25Teacher(corpus),
    }


@pytest.fixture(scope="module")
def result(world):
    return run_pipelines(world["queries"], world["qrels"], bm25=world["bm25"], encoder=world["encoder"],
                         dense_index=world["dense_index"], corpus_text=world["corpus_text"],
                         reranker=world["reranker"], options=PipelineOptions(rerank_depth=RERANK_DEPTH))


def test_every_pipeline_has_metrics_and_latency(result, world):
    n = len(world["queries"])
    opts = result.options
    assert list(result.metrics) == list(PIPELINES) and result.skipped == {}
    for p, values in result.metrics.items():
        assert list(values) == ["nDCG@10", "MRR@10", "R@10", "R@20", "R@50", "R@100", "R@200", "R@500", "R@1000"]
        assert all(0.0 <= v <= 1.0 for v in values.values()), (p, values)
        assert set(result.runs[p].query_id) == set(world["queries"].query_id)
    # Every tiny-fixture query shares its topic word with all the topic's passages.
    assert result.metrics["bm25"]["R@1000"] == 1.0
    assert result.metrics["dense"]["R@1000"] == 1.0  # dense search returns the whole 32-passage corpus

    assert list(result.latency) == [*STAGES, *(f"pipeline:{p}" for p in PIPELINES)]
    for name, stats in result.latency.items():
        assert stats.n == n and 0 < stats.p50_ms <= stats.p99_ms, name
    # A pipeline's per-query latency is the sum of its stages', so its mean is the sum of their means.
    lat = {k: v.mean_ms for k, v in result.latency.items()}
    assert lat["pipeline:dense"] == pytest.approx(lat["dense-encode"] + lat["dense-search"])
    assert lat["pipeline:fusion-rrf"] == pytest.approx(
        lat["bm25"] + lat["dense-encode"] + lat["dense-search"] + lat["fusion-rrf"])
    assert lat["pipeline:rerank"] == pytest.approx(lat["dense-encode"] + lat["dense-search"] + lat["rerank"])
    assert opts.depth == 1000


def test_metrics_are_those_of_the_returned_runs(result, world):
    for p, run in result.runs.items():
        assert evaluate(run, world["qrels"], result.options.metrics) == pytest.approx(result.metrics[p], abs=1e-12)
    pq = result.per_query
    assert list(pq.columns) == ["pipeline", "query_id", "measure", "value"]
    assert set(pq.query_id) == set(world["qrels"].query_id)
    means = pq.groupby(["pipeline", "measure"])["value"].mean()
    for p, values in result.metrics.items():
        for m, v in values.items():
            assert means[(p, m)] == pytest.approx(v, abs=1e-12), (p, m)


def test_runs_are_the_served_stage_outputs(result, world):
    runs = result.runs
    bm25 = world["bm25"].search(world["queries"].query_id.tolist(), world["queries"].text.tolist(), 1000)
    pd.testing.assert_frame_equal(sort_run(runs["bm25"]), sort_run(bm25), check_dtype=False)
    # Fusing whole runs at once gives the per-query fused runs, concatenated.
    pd.testing.assert_frame_equal(sort_run(runs["fusion-interp"]), interpolate(runs["bm25"], runs["dense"], 0.5))
    pd.testing.assert_frame_equal(sort_run(runs["fusion-rrf"]), reciprocal_rank_fusion([runs["bm25"], runs["dense"]]))


def test_rerank_orders_the_dense_head_by_teacher_score(result, world):
    teacher, text = world["reranker"], dict(zip(world["queries"].query_id, world["queries"].text))
    for qid, run in result.runs["rerank"].groupby("query_id"):
        run = run.reset_index(drop=True)
        dense = sort_run(result.runs["dense"][result.runs["dense"].query_id == qid]).doc_id.tolist()
        assert (np.diff(run.score) < 0).all()  # strictly decreasing: no tie for the evaluator to break
        head = run.doc_id.tolist()[:RERANK_DEPTH]
        assert set(head) == set(dense[:RERANK_DEPTH])
        assert run.doc_id.tolist()[RERANK_DEPTH:] == dense[RERANK_DEPTH:]  # the tail keeps the dense ranking
        rows = pd.DataFrame({"qid": qid, "pid": dense[:RERANK_DEPTH], "query": text[qid],
                             "passage": [world["corpus_text"][d] for d in dense[:RERANK_DEPTH]]})
        score = dict(zip(rows.pid, teacher.score_batch(rows)))
        # Teacher score descending; equal teacher scores keep the dense order.
        want = sorted(dense[:RERANK_DEPTH], key=lambda d: (-score[d], dense.index(d)))
        assert head == want


def test_rerank_query_errors():
    class Broken:
        name = "broken"

        def score_batch(self, rows):
            return np.zeros(len(rows) + 1)

    cands = pd.DataFrame({"query_id": ["q", "q"], "doc_id": ["a", "b"], "score": [2.0, 1.0]})
    with pytest.raises(TasbRayError, match="returned 3 scores for 2 passages"):
        rerank_query(Broken(), "q", "text", cands, {"a": "x", "b": "y"}, 5)
    with pytest.raises(TasbRayError, match="'b' has no text"):
        rerank_query(Broken(), "q", "text", cands, {"a": "x"}, 5)


def test_tables(result):
    table = result.to_table()
    assert table.pipeline.tolist() == list(PIPELINES)
    assert table.loc[table.pipeline == "rerank", "nDCG@10"].item() == result.metrics["rerank"]["nDCG@10"]
    assert table.loc[table.pipeline == "bm25", "latency p99 (ms)"].item() == result.latency["pipeline:bm25"].p99_ms
    md = result.to_markdown()
    assert md.splitlines()[0].startswith("| pipeline | nDCG@10 | MRR@10 | R@10 |")
    assert f"| fusion-rrf | {result.metrics['fusion-rrf']['nDCG@10']:.4f} |" in md
    assert "| pipeline:rerank |" in md


def test_missing_inputs_skip_pipelines(world):
    queries = world["queries"].head(3)
    res = run_pipelines(queries, world["qrels"], bm25=world["bm25"], encoder=world["encoder"],
                        dense_index=world["dense_index"], corpus_text=world["corpus_text"])
    assert list(res.metrics) == ["bm25", "dense", "fusion-interp", "fusion-rrf"]
    assert res.skipped == {"rerank": "not given: a reranker"}
    assert "rerank" not in res.latency and "pipeline:rerank" not in res.latency
    assert "`rerank` skipped" in res.to_markdown()
    # Queries judged in the qrels but not served count as 0, as in evaluate().
    assert res.per_query.query_id.nunique() == world["qrels"].query_id.nunique()

    only = run_pipelines(queries, world["qrels"], bm25=world["bm25"],
                         options=PipelineOptions(pipelines=("bm25", "dense"), recall_cutoffs=(5,)))
    assert list(only.metrics) == ["bm25"] and list(only.metrics["bm25"]) == ["nDCG@10", "MRR@10", "R@5"]
    assert list(only.latency) == ["bm25", "pipeline:bm25"]
    assert "encoder" in only.skipped["dense"] and "dense index" in only.skipped["dense"]
    with pytest.raises(TasbRayError, match="none can run"):
        run_pipelines(queries, world["qrels"], options=PipelineOptions(pipelines=("rerank",)))


def test_option_and_input_errors(world):
    with pytest.raises(ConfigError, match="unknown pipeline"):
        PipelineOptions(pipelines=("bm25", "splade"))
    with pytest.raises(ConfigError, match="rerank_depth"):
        PipelineOptions(depth=50, rerank_depth=100)
    with pytest.raises(ConfigError, match="interp_weight"):
        PipelineOptions(interp_weight=-0.1)
    with pytest.raises(ConfigError, match="recall_cutoffs"):
        PipelineOptions(recall_cutoffs=(0,))
    assert PipelineOptions(pipelines=["bm25"]).pipelines == ("bm25",)
    with pytest.raises(TasbRayError, match="lacks column"):
        run_pipelines(world["queries"].rename(columns={"text": "q"}), world["qrels"], bm25=world["bm25"])
    with pytest.raises(TasbRayError, match="appears more than once"):
        run_pipelines(pd.concat([world["queries"].head(2)] * 2), world["qrels"], bm25=world["bm25"])
