"""First-stage retrieval on a prepared dataset split: BM25 or dense, producing a run and its metrics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tasb_ray.data import PreparedDataset
from tasb_ray.errors import TasbRayError
from tasb_ray.evaluation.metrics import DEFAULT_METRICS, evaluate
from tasb_ray.models.encoder import BertDot, pick_device
from tasb_ray.retrieval.bm25 import BM25Index, BM25Params
from tasb_ray.retrieval.dense import DenseIndex
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT


@dataclass
class DenseOptions:
    model: str = "minilm-l6"
    pooling: str = "auto"
    normalize: bool | None = None
    query_max_len: int | None = None
    passage_max_len: int | None = None
    batch_size: int = 64
    device: str | None = None
    index: str | None = None        # load this saved index instead of encoding the corpus
    save_index: str | None = None   # save the index built here
    index_kind: str = "flat"


@dataclass
class RetrievalResult:
    run: pd.DataFrame
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def load_encoder(opts: DenseOptions):
    enc = BertDot(opts.model, pooling=opts.pooling, normalize=opts.normalize, query_max_len=opts.query_max_len,
                  passage_max_len=opts.passage_max_len)
    return enc.to(pick_device(opts.device)).eval()


def build_dense_index(encoder, corpus: pd.DataFrame, batch_size: int = 64, kind: str = "flat",
                      show_progress: bool = False, meta: dict | None = None) -> DenseIndex:
    """Encode every passage of ``corpus`` (doc_id, text) with ``encoder`` and index the vectors."""
    vectors = encoder.encode(corpus[TEXT].tolist(), "passage", batch_size, show_progress=show_progress)
    meta = {"model": encoder.model_name, "spec": asdict(encoder.spec), **(meta or {})}
    return DenseIndex(corpus[DOC_ID].to_numpy(), vectors, kind=kind, meta=meta)


def dense_search(encoder, index: DenseIndex, queries: pd.DataFrame, k: int = 1000, batch_size: int = 64) -> pd.DataFrame:
    """Encode ``queries`` (query_id, text) and search ``index``: the run table."""
    qvec = encoder.encode(queries[TEXT].tolist(), "query", batch_size)
    return index.search(queries[QUERY_ID].tolist(), qvec, k)


def dense_index(ds: PreparedDataset, encoder, opts: DenseOptions, show_progress: bool = True) -> DenseIndex:
    if opts.index:
        index = DenseIndex.load(opts.index)
        saved_model = index.meta.get("model")
        if saved_model and saved_model != encoder.model_name:
            raise TasbRayError(f"{opts.index}: index was built with model {saved_model!r}, not {encoder.model_name!r}")
        return index
    index = build_dense_index(encoder, ds.corpus(), opts.batch_size, opts.index_kind, show_progress,
                              meta={"dataset": ds.name})
    if opts.save_index:
        index.save(opts.save_index)
    return index


def retrieve(ds: PreparedDataset, split: str, retriever: str, k: int = 1000, dense: DenseOptions | None = None,
             bm25: BM25Params | None = None, metrics=DEFAULT_METRICS, rel_level: int = 1,
             show_progress: bool = True) -> RetrievalResult:
    queries, qrels = ds.queries(split), ds.qrels(split)
    timings: dict[str, float] = {}
    info: dict = {"dataset": ds.name, "split": split, "retriever": retriever, "k": k, "rel_level": rel_level,
                  "queries": len(queries)}
    t0 = time.perf_counter()
    if retriever == "bm25":
        corpus = ds.corpus()
        params = bm25 or BM25Params()
        index = BM25Index(corpus[DOC_ID].to_numpy(), corpus[TEXT].tolist(), params, show_progress=show_progress)
        timings["index_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        run = index.search(queries[QUERY_ID].tolist(), queries[TEXT].tolist(), k)
        timings["search_s"] = time.perf_counter() - t1
        info["bm25"] = asdict(params)
    elif retriever == "dense":
        opts = dense or DenseOptions()
        encoder = load_encoder(opts)
        index = dense_index(ds, encoder, opts, show_progress)
        timings["index_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        run = dense_search(encoder, index, queries, k, opts.batch_size)
        timings["search_s"] = time.perf_counter() - t1
        info.update(model=encoder.model_name, encoder=asdict(encoder.spec))
    else:
        raise TasbRayError(f"unknown retriever {retriever!r} (bm25, dense)")
    return RetrievalResult(run, evaluate(run, qrels, metrics, rel_level), timings, info)


def default_run_path(dataset: str, split: str, retriever: str, model: str | None = None) -> Path:
    tag = retriever if retriever == "bm25" else f"{retriever}-{Path(str(model)).name}"
    return Path("runs") / f"{Path(dataset).name}.{split}.{tag}.trec"

