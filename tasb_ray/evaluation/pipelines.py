"""Retrieval pipelines every trained model is evaluated with: effectiveness and per-query latency.

Pipelines (each one a run over the queries, evaluated with ir-measures):

- ``bm25``: BM25 alone;
- ``dense``: the dense retriever alone (encode the query, exact inner-product search);
- ``fusion-interp``: BM25 and dense fused by per-query min-max score interpolation;
- ``fusion-rrf``: BM25 and dense fused by reciprocal-rank fusion;
- ``rerank``: the dense top ``rerank_depth`` re-ranked by a teacher (e.g. a cross-encoder).

Queries are served one at a time (batch size 1), as a search service would, and every stage of
every query is timed; what is timed is exactly what is evaluated, because the evaluated runs are
the outputs of those timed calls. Each stage first serves one query untimed (warm-up: lazy
initialisation, caches, first CUDA kernels).

The ``rerank`` run is the re-ranked top ``rerank_depth`` followed by the rest of the dense ranking
(dense ranks ``rerank_depth + 1 .. depth``), so its recall at large cutoffs stays comparable with the
other pipelines' rather than being capped at ``rerank_depth``. Its scores are rank-derived
(``n, n-1, ..., 1`` down the ranking): the teacher's and the dense scores are on different scales,
and teacher ties (BM25 gives 0 to every passage without a query term) are broken by the dense rank
instead of by the evaluator's doc-id order.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
    Sampling", SIGIR 2021, arXiv 2104.06967 (dense retrieval, BM25 fusion and re-ranking results).
    Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual Rank
    Learning Methods", SIGIR 2009.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.evaluation.fusion import interpolate, reciprocal_rank_fusion, sort_run
from tasb_ray.evaluation.latency import LatencyStats, StageTimer
from tasb_ray.evaluation.metrics import per_query
from tasb_ray.schema import DOC_ID, QRELS_COLUMNS, QUERIES_COLUMNS, QUERY_ID, SCORE, TEXT
from tasb_ray.tables import check_columns

PIPELINES = ("bm25", "dense", "fusion-interp", "fusion-rrf", "rerank")
DENSE_STAGES = ("dense-encode", "dense-search")
# The stages whose per-query times add up to each pipeline's latency.
PIPELINE_STAGES: dict[str, tuple[str, ...]] = {
    "bm25": ("bm25",),
    "dense": DENSE_STAGES,
    "fusion-interp": ("bm25", *DENSE_STAGES, "fusion-interp"),
    "fusion-rrf": ("bm25", *DENSE_STAGES, "fusion-rrf"),
    "rerank": (*DENSE_STAGES, "rerank"),
}
STAGES = ("bm25", *DENSE_STAGES, "fusion-interp", "fusion-rrf", "rerank")
TOTAL_PREFIX = "pipeline:"
PER_QUERY_COLUMNS = ("pipeline", QUERY_ID, "measure", "value")


@dataclass(frozen=True)
class PipelineOptions:
    """What to run and how to evaluate it.

    Args:
        depth: documents retrieved (and kept after fusion) per query.
        rerank_depth: dense candidates per query the reranker scores (<= ``depth``).
        interp_weight: weight of dense in the interpolation (BM25 gets ``1 - interp_weight``).
        rrf_k: the reciprocal-rank fusion constant.
        recall_cutoffs: k of each reported recall ``R@k``.
        rel_level: minimum grade counted relevant by MRR and recall (nDCG uses the grades).
        pipelines: the pipelines to run, from :data:`PIPELINES`.
    """

    depth: int = 1000
    rerank_depth: int = 100
    interp_weight: float = 0.5
    rrf_k: int = 60
    recall_cutoffs: tuple[int, ...] = (10, 20, 50, 100, 200, 500, 1000)
    rel_level: int = 1
    pipelines: tuple[str, ...] = PIPELINES

    def __post_init__(self):
        # Lists from YAML / JSON become tuples, so options stay hashable and comparable.
        object.__setattr__(self, "recall_cutoffs", tuple(self.recall_cutoffs))
        object.__setattr__(self, "pipelines", tuple(self.pipelines))
        unknown = [p for p in self.pipelines if p not in PIPELINES]
        if unknown:
            raise ConfigError(f"unknown pipeline(s) {unknown} (choose from {list(PIPELINES)})")
        if not self.pipelines or len(set(self.pipelines)) != len(self.pipelines):
            raise ConfigError(f"pipelines must be a non-empty list without repeats, got {list(self.pipelines)}")
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")
        if not 1 <= self.rerank_depth <= self.depth:
            raise ConfigError(f"rerank_depth must be in [1, depth={self.depth}], got {self.rerank_depth}")
        if not 0.0 <= self.interp_weight <= 1.0:
            raise ConfigError(f"interp_weight must be in [0, 1], got {self.interp_weight}")
        if self.rrf_k < 0:
            raise ConfigError(f"rrf_k must be >= 0, got {self.rrf_k}")
        if not self.recall_cutoffs or any(int(k) != k or k < 1 for k in self.recall_cutoffs):
            raise ConfigError(f"recall_cutoffs must be positive integers, got {list(self.recall_cutoffs)}")
        if self.rel_level < 1:
            raise ConfigError(f"rel_level must be >= 1, got {self.rel_level}")

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names as :mod:`tasb_ray.evaluation.metrics` spells them."""
        return ("nDCG@10", "MRR@10", *(f"R@{int(k)}" for k in self.recall_cutoffs))


@dataclass
class PipelineResult:
    """Effectiveness and latency of each pipeline that ran.

    Args:
        metrics: pipeline → metric name → mean over the judged queries.
        latency: stage (``bm25``, ``dense-encode``, ...) or pipeline total (``pipeline:NAME``) → stats.
        runs: pipeline → its run over all queries (``query_id, doc_id, score``).
        per_query: one row per (pipeline, judged query, measure): columns ``pipeline, query_id, measure, value``.
        skipped: pipeline → why it did not run (an input was not given).
        options: the options used.
    """

    metrics: dict[str, dict[str, float]]
    latency: dict[str, LatencyStats]
    runs: dict[str, pd.DataFrame]
    per_query: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    options: PipelineOptions = field(default_factory=PipelineOptions)

    def to_table(self) -> pd.DataFrame:
        """One row per pipeline that ran: its metrics and the p50 / p99 / mean of its per-query total latency."""
        rows = []
        for name, values in self.metrics.items():
            total = self.latency[TOTAL_PREFIX + name]
            rows.append({"pipeline": name, **values, "latency p50 (ms)": total.p50_ms,
                         "latency p99 (ms)": total.p99_ms, "latency mean (ms)": total.mean_ms})
        columns = ["pipeline", *self.options.metrics, "latency p50 (ms)", "latency p99 (ms)", "latency mean (ms)"]
        return pd.DataFrame(rows, columns=columns)

    def to_markdown(self) -> str:
        """The pipeline table, a per-stage latency table and a note per skipped pipeline, as Markdown."""
        table = self.to_table()
        metric_cols = set(self.options.metrics)
        parts = [_markdown_table(table, lambda col, v: f"{v:.4f}" if col in metric_cols else f"{v:.2f}")]
        stages = pd.DataFrame([{"stage": name, "p50 (ms)": s.p50_ms, "p99 (ms)": s.p99_ms, "mean (ms)": s.mean_ms,
                                "queries": s.n} for name, s in self.latency.items()])
        if not stages.empty:
            parts.append(_markdown_table(stages, lambda col, v: str(v) if col == "queries" else f"{v:.2f}"))
        if self.skipped:
            parts.append("\n".join(f"- `{name}` skipped: {why}" for name, why in self.skipped.items()))
        return "\n\n".join(parts) + "\n"


@dataclass
class _Inputs:
    bm25: Any
    encoder: Any
    dense_index: Any
    corpus_text: Mapping[str, str] | None
    reranker: Any


def run_pipelines(queries: pd.DataFrame, qrels: pd.DataFrame, *, bm25=None, encoder=None, dense_index=None,
                  corpus_text: Mapping[str, str] | None = None, reranker=None,
                  options: PipelineOptions | None = None, show_progress: bool = False) -> PipelineResult:
    """Serve every query through each pipeline one at a time, timing each stage; evaluate the runs.

    Args:
        queries: ``query_id, text`` of the queries to serve.
        qrels: ``query_id, doc_id, relevance``; judged queries absent from a run count as 0.
        bm25: a :class:`tasb_ray.retrieval.bm25.BM25Index` over the corpus.
        encoder: a :class:`tasb_ray.models.encoder.BertDot` (anything with ``encode(texts, kind, batch_size)``).
        dense_index: a :class:`tasb_ray.retrieval.dense.DenseIndex` of the corpus encoded by ``encoder``.
        corpus_text: doc id → passage text, for the reranker's rows.
        reranker: a :class:`tasb_ray.teachers.base.Teacher` scoring (qid, pid, query, passage) rows.
        options: pipelines, depths, fusion parameters, metrics.
        show_progress: a progress bar over queries.

    A pipeline whose inputs are not given is left out and named in ``skipped``; when none can run
    this raises :class:`TasbRayError`.
    """
    options = options or PipelineOptions()
    check_columns(queries, QUERIES_COLUMNS, "pipeline queries")
    check_columns(qrels, QRELS_COLUMNS, "pipeline qrels")
    if queries.empty:
        raise TasbRayError("pipelines: no queries to serve")
    qids = queries[QUERY_ID].astype(str).tolist()
    texts = queries[TEXT].astype(str).tolist()
    if len(set(qids)) != len(qids):
        dup = pd.Index(qids)[pd.Index(qids).duplicated()][0]
        raise TasbRayError(f"pipelines: query id {dup!r} appears more than once")

    inputs = _Inputs(bm25, encoder, dense_index, corpus_text, reranker)
    skipped = {p: why for p in options.pipelines if (why := _missing_input(p, inputs))}
    active = [p for p in options.pipelines if p not in skipped]
    if not active:
        raise TasbRayError("pipelines: none can run: " + "; ".join(f"{p}: {w}" for p, w in skipped.items()))
    stages = [s for s in STAGES if any(s in PIPELINE_STAGES[p] for p in active)]

    _serve(qids[0], texts[0], active, stages, inputs, options, StageTimer())  # warm-up, not counted
    timer = StageTimer()
    per_pipeline: dict[str, list[pd.DataFrame]] = {p: [] for p in active}
    pairs = zip(qids, texts)
    if show_progress:
        pairs = tqdm(pairs, total=len(qids), desc="pipelines", unit="query")
    for qid, text in pairs:
        for p, run in _serve(qid, text, active, stages, inputs, options, timer).items():
            per_pipeline[p].append(run)
    for p in active:
        timer.total(TOTAL_PREFIX + p, PIPELINE_STAGES[p])

    runs = {p: pd.concat(parts, ignore_index=True) for p, parts in per_pipeline.items()}
    metrics, tables = {}, []
    for p, run in runs.items():
        table = per_query(run, qrels, options.metrics, options.rel_level)
        metrics[p] = {m: float(table[m].mean()) for m in options.metrics}
        long = table.rename_axis(QUERY_ID).reset_index().melt(id_vars=[QUERY_ID], var_name="measure",
                                                              value_name="value")
        long.insert(0, "pipeline", p)
        tables.append(long)
    return PipelineResult(metrics=metrics, latency=timer.stats(), runs=runs,
                          per_query=pd.concat(tables, ignore_index=True)[list(PER_QUERY_COLUMNS)],
                          skipped=skipped, options=options)


def rerank_query(reranker, query_id: str, query_text: str, candidates: pd.DataFrame,
                 corpus_text: Mapping[str, str], rerank_depth: int) -> pd.DataFrame:
    """One query's candidates with the top ``rerank_depth`` re-ranked by ``reranker``, the rest after them.

    Args:
        reranker: a teacher; its ``score_batch`` gets rows ``qid, pid, query, passage``.
        query_id, query_text: the query.
        candidates: the query's first-stage run (``query_id, doc_id, score``).
        corpus_text: doc id → passage text.
        rerank_depth: how many of the best candidates are re-scored.

    Returns:
        A run of all candidates: the re-ranked head (teacher score descending, ties in first-stage
        order), then the remaining candidates in first-stage order; scores ``n, n-1, ..., 1``.
    """
    ranked = sort_run(candidates)[DOC_ID].tolist()
    head = ranked[:rerank_depth]
    try:
        passages = [corpus_text[pid] for pid in head]
    except KeyError as err:
        raise TasbRayError(f"rerank: candidate passage {err.args[0]!r} has no text in corpus_text") from None
    rows = pd.DataFrame({"qid": [query_id] * len(head), "pid": head, "query": [query_text] * len(head),
                         "passage": passages})
    scores = np.asarray(reranker.score_batch(rows), dtype=np.float64).reshape(-1) if head else np.zeros(0)
    if len(scores) != len(head):
        raise TasbRayError(f"rerank: {getattr(reranker, 'name', 'reranker')} returned {len(scores)} scores "
                           f"for {len(head)} passages")
    order = np.argsort(-scores, kind="stable")
    docs = [head[i] for i in order] + ranked[rerank_depth:]
    return pd.DataFrame({QUERY_ID: np.asarray([query_id] * len(docs), dtype=object),
                         DOC_ID: np.asarray(docs, dtype=object), SCORE: np.arange(len(docs), 0, -1, dtype=np.float64)})


def _missing_input(pipeline: str, inputs: _Inputs) -> str | None:
    """Why ``pipeline`` cannot run with ``inputs`` (``None`` when it can)."""
    needs_bm25 = pipeline in ("bm25", "fusion-interp", "fusion-rrf")
    needs_dense = pipeline != "bm25"
    missing = []
    if needs_bm25 and inputs.bm25 is None:
        missing.append("a BM25 index")
    if needs_dense and inputs.encoder is None:
        missing.append("an encoder")
    if needs_dense and inputs.dense_index is None:
        missing.append("a dense index")
    if pipeline == "rerank":
        if inputs.reranker is None:
            missing.append("a reranker")
        if inputs.corpus_text is None:
            missing.append("corpus_text for the reranker's passages")
    return f"not given: {', '.join(missing)}" if missing else None


def _serve(qid: str, text: str, active: list[str], stages: list[str], inputs: _Inputs, options: PipelineOptions,
           timer: StageTimer) -> dict[str, pd.DataFrame]:
    """One query through the needed ``stages``, each timed by ``timer``: the run of each active pipeline."""
    out: dict[str, pd.DataFrame] = {}
    if "bm25" in stages:
        out["bm25"] = timer.time("bm25", inputs.bm25.search, [qid], [text], options.depth)
    if "dense-encode" in stages:
        qvec = timer.time("dense-encode", inputs.encoder.encode, [text], "query", 1)
        out["dense"] = timer.time("dense-search", inputs.dense_index.search, [qid], qvec, options.depth)
    if "fusion-interp" in stages:
        out["fusion-interp"] = timer.time("fusion-interp", interpolate, out["bm25"], out["dense"],
                                          options.interp_weight, options.depth)
    if "fusion-rrf" in stages:
        out["fusion-rrf"] = timer.time("fusion-rrf", reciprocal_rank_fusion, [out["bm25"], out["dense"]],
                                       options.rrf_k, options.depth)
    if "rerank" in stages:
        out["rerank"] = timer.time("rerank", rerank_query, inputs.reranker, qid, text, out["dense"],
                                   inputs.corpus_text, options.rerank_depth)
    return {p: out[p] for p in active}


def _markdown_table(df: pd.DataFrame, fmt) -> str:
    """A GitHub Markdown table of ``df``; ``fmt(column, value)`` formats the numeric cells."""
    def cell(col, v):
        return fmt(col, v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(df.columns, row)) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines)
