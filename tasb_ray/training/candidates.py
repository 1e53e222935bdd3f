"""First-stage candidates for training queries: the pool that negatives are sampled from.

TAS-Balanced (Hofstätter et al., SIGIR 2021, arXiv 2104.06967) trains on (query, positive, negative)
triples whose negatives come from a first-stage ranking (BM25 in the paper). This module produces, for every
query of a split, the top-``depth`` passages of BM25 and/or a dense retriever as a table
``qid, pid, source, rank``.

The work is split into plain functions so a Ray Data stage can do the expensive part (encoding the corpus)
elsewhere and pass ``passage_vectors`` in; :func:`first_stage_candidates` only glues them together.

Merging: when one passage comes from several sources for a query it is kept once, with its best (smallest)
rank over the sources and ``source`` naming every source that returned it, joined by ``+`` in the order the
sources were requested (e.g. ``bm25+dense``). Ranks of different sources are not comparable scores; the
merged rank only says how early some source found the passage.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.retrieval.bm25 import BM25Index, BM25Params
from tasb_ray.retrieval.dense import DenseIndex
from tasb_ray.schema import DOC_ID, QUERY_ID, SCORE, TEXT
from tasb_ray.tables import ID, INT, read_table, write_table

log = logging.getLogger(__name__)

SOURCES = ("bm25", "dense")
CANDIDATE_COLUMNS = ("qid", "pid", "source", "rank")


def run_to_candidates(run: pd.DataFrame, source: str) -> pd.DataFrame:
    """Turn a run (``query_id, doc_id, score``) into candidates with 1-based ranks.

    Ranks follow the score, highest first; ties are broken by pid so the ranks do not depend on the order the
    retriever returned tied passages in.

    Args:
        run: retrieval output with ``query_id, doc_id, score``.
        source: the name stored in the ``source`` column.
    """
    df = pd.DataFrame({"qid": run[QUERY_ID].astype(str).to_numpy(dtype=object),
                       "pid": run[DOC_ID].astype(str).to_numpy(dtype=object),
                       "score": run[SCORE].to_numpy(dtype=np.float64)})
    df = df.sort_values(["qid", "score", "pid"], ascending=[True, False, True], kind="stable")
    df = df.drop_duplicates(["qid", "pid"], keep="first")
    ranks = df.groupby("qid", sort=False).cumcount().to_numpy() + 1
    return pd.DataFrame({"qid": df["qid"].to_numpy(), "pid": df["pid"].to_numpy(),
                         "source": source, "rank": ranks.astype(np.int64)})


def bm25_candidates(qids: Sequence[str], query_texts: Sequence[str], doc_ids: Sequence[str],
                    doc_texts: Sequence[str], depth: int, params: BM25Params = BM25Params(),
                    index: BM25Index | None = None, show_progress: bool = False) -> pd.DataFrame:
    """Top-``depth`` BM25 candidates per query (fewer where fewer passages share a term with the query).

    Args:
        qids, query_texts: the queries, aligned.
        doc_ids, doc_texts: the corpus, aligned (ignored when ``index`` is given).
        depth: candidates per query.
        params: BM25 parameters for a new index.
        index: an already built index to reuse.
        show_progress: show bm25s progress bars.
    """
    if index is None:
        index = BM25Index(doc_ids, doc_texts, params, show_progress=show_progress)
    return run_to_candidates(index.search(list(qids), list(query_texts), k=depth), "bm25")


def dense_candidates(qids: Sequence[str], query_vectors: np.ndarray, doc_ids: Sequence[str],
                     passage_vectors: np.ndarray, depth: int) -> pd.DataFrame:
    """Top-``depth`` candidates per query by exact inner product (faiss ``IndexFlatIP``).

    Args:
        qids: query ids aligned with the rows of ``query_vectors``.
        query_vectors: float [n_queries, dim].
        doc_ids: passage ids aligned with the rows of ``passage_vectors``.
        passage_vectors: float [n_passages, dim].
        depth: candidates per query.
    """
    _check_rows(query_vectors, len(qids), "query_vectors", "queries")
    _check_rows(passage_vectors, len(doc_ids), "passage_vectors", "corpus passages")
    if len(qids) == 0:
        return _empty()
    index = DenseIndex(doc_ids, passage_vectors)
    return run_to_candidates(index.search(list(qids), query_vectors, k=depth), "dense")


def merge_candidates(per_source: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Union of several sources' candidates, one row per (qid, pid).

    A pid found by several sources keeps its best rank and a ``source`` joining those sources with ``+`` in the
    mapping's order. Output is sorted by qid, rank, pid.

    Args:
        per_source: source name → candidates frame (``qid, pid, source, rank``), in the preferred order.
    """
    names = list(per_source)
    frames = [pd.DataFrame({"qid": df["qid"].astype(str).to_numpy(dtype=object),
                            "pid": df["pid"].astype(str).to_numpy(dtype=object),
                            "rank": df["rank"].to_numpy(dtype=np.int64),
                            # One bit per source: the OR over a (qid, pid) group says which sources found it,
                            # without a Python-level string join per group.
                            "_mask": np.int64(1) << i})
              for i, df in enumerate(per_source.values()) if len(df)]
    if not frames:
        return _empty()
    all_rows = pd.concat(frames, ignore_index=True).drop_duplicates(["qid", "pid", "_mask"])
    merged = all_rows.groupby(["qid", "pid"], sort=False).agg(rank=("rank", "min"), _mask=("_mask", "sum"))
    merged = merged.reset_index()
    masks = np.unique(merged["_mask"].to_numpy())
    label = {int(m): "+".join(n for i, n in enumerate(names) if int(m) >> i & 1) for m in masks}
    merged["source"] = merged["_mask"].map(label).astype(str)
    merged = merged.sort_values(["qid", "rank", "pid"], kind="stable").reset_index(drop=True)
    return merged[list(CANDIDATE_COLUMNS)]


def first_stage_candidates(ds, split: str, sources: Sequence[str] = ("bm25",), depth: int = 100, encoder=None,
                           batch_size: int = 64, show_progress: bool = False,
                           passage_vectors: np.ndarray | None = None, query_vectors: np.ndarray | None = None,
                           bm25_params: BM25Params = BM25Params()) -> pd.DataFrame:
    """Candidates ``qid, pid, source, rank`` for every query of ``split``.

    Args:
        ds: a :class:`tasb_ray.data.prepare.PreparedDataset`.
        split: the split whose queries get candidates (usually ``train``).
        sources: any of ``bm25``, ``dense``; merged as described in the module docstring.
        depth: candidates per query and source (rank 1..depth).
        encoder: a :class:`tasb_ray.models.encoder.BertDot`; needed for ``dense`` unless both vector arrays are given.
        batch_size: encoding batch size.
        show_progress: progress bars for encoding and BM25.
        passage_vectors: precomputed passage embeddings aligned with ``ds.corpus()`` row order (e.g. encoded
            on a Ray actor pool); skips passage encoding.
        query_vectors: precomputed query embeddings aligned with ``ds.queries(split)`` row order.
        bm25_params: BM25 parameters.
    """
    sources = _check_sources(sources)
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ConfigError(f"depth must be an integer >= 1, got {depth!r}")
    if "dense" in sources and encoder is None and (passage_vectors is None or query_vectors is None):
        raise ConfigError("source 'dense' needs an encoder (or both passage_vectors and query_vectors)")

    corpus = ds.corpus()
    queries = ds.queries(split)
    qids = queries[QUERY_ID].astype(str).tolist()
    qtexts = queries[TEXT].tolist()
    doc_ids = corpus[DOC_ID].astype(str).to_numpy(dtype=object)

    per_source: dict[str, pd.DataFrame] = {}
    for source in sources:
        if source == "bm25":
            per_source[source] = bm25_candidates(qids, qtexts, doc_ids, corpus[TEXT].tolist(), depth,
                                                 params=bm25_params, show_progress=show_progress)
        else:
            if passage_vectors is None:
                passage_vectors = encoder.encode(corpus[TEXT].tolist(), kind="passage", batch_size=batch_size,
                                                 show_progress=show_progress)
            if query_vectors is None:
                query_vectors = encoder.encode(qtexts, kind="query", batch_size=batch_size,
                                               show_progress=show_progress)
            per_source[source] = dense_candidates(qids, query_vectors, doc_ids, passage_vectors, depth)
    out = merge_candidates(per_source)
    missing = len(set(qids) - set(out["qid"]))
    if missing:
        # BM25 returns nothing for a query sharing no term with the corpus; such queries get no negatives.
        log.warning("%d of %d %s queries have no first-stage candidates", missing, len(qids), split)
    log.info("candidates for %s: %d queries, %d rows from %s (depth %d)", split, out["qid"].nunique(), len(out),
             "+".join(sources), depth)
    return out


CANDIDATES_SCHEMA = {"qid": ID, "pid": ID, "source": ID, "rank": INT}


def write_candidates(path: str | os.PathLike, candidates: pd.DataFrame) -> None:
    write_table(path, candidates, CANDIDATES_SCHEMA)


def read_candidates(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, CANDIDATES_SCHEMA)


def _check_sources(sources: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sources, str):
        sources = (sources,)
    out = tuple(dict.fromkeys(sources))
    if not out:
        raise ConfigError(f"sources must name at least one of {list(SOURCES)}")
    unknown = [s for s in out if s not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown candidate source(s) {unknown}; choose from {list(SOURCES)}")
    return out


def _check_rows(vectors: np.ndarray, n: int, name: str, what: str) -> None:
    if vectors.ndim != 2 or len(vectors) != n:
        raise TasbRayError(f"{name} has shape {tuple(vectors.shape)}, expected {n} rows (one per {what}, in order)")


def _empty() -> pd.DataFrame:
    return pd.DataFrame({"qid": pd.Series(dtype=object), "pid": pd.Series(dtype=object),
                         "source": pd.Series(dtype=object), "rank": pd.Series(dtype=np.int64)})
