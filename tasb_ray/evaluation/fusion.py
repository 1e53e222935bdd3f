"""Fusion of two or more runs: per-query min-max score interpolation and reciprocal-rank fusion.

Written by hand on purpose: ``ranx.fuse`` does the same but costs ~46 s of numba compilation on
its first call on this project's machine, which would dominate the per-query latency we measure
and every test that touches it.

All functions take and return run tables (``query_id, doc_id, score``); outputs are sorted by
query id, then score descending, with ties broken by doc id ascending so the order is deterministic.
The work is done on NumPy arrays rather than with pandas merge / groupby / sort: the pipelines time
fusion per query, and pandas' per-call overhead (~14 ms for two 1000-document runs, against 2-3 ms
here) would be measured instead of the fusion.

References:
    Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual Rank
    Learning Methods", SIGIR 2009.
    Lin et al., "Pyserini: A Python Toolkit for Reproducible Information Retrieval Research with
    Sparse and Dense Representations", SIGIR 2021 (hybrid sparse + dense score interpolation).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import DOC_ID, QUERY_ID, RUN_COLUMNS, SCORE
from tasb_ray.tables import check_columns


def sort_run(run: pd.DataFrame, depth: int | None = None) -> pd.DataFrame:
    """``run`` ordered by query id, score descending, doc id ascending; the top ``depth`` rows per query.

    Args:
        run: a run table (``query_id, doc_id, score``); other columns are dropped.
        depth: rows kept per query (``None``: all).
    """
    q, d, s = _arrays(run)
    perm, pos = _order(_sort_keys(q), s, _sort_keys(d))
    if depth is not None:
        perm = perm[pos < depth]
    return _frame(q[perm], d[perm], s[perm])


def minmax_normalise(run: pd.DataFrame) -> np.ndarray:
    """Each row's score min-max scaled within its query to [0, 1].

    A query whose retrieved documents all have the same score (one document, say) maps them to 1:
    being retrieved must beat being absent, which :func:`interpolate` counts as 0.
    """
    q, _, s = _arrays(run)
    codes, uniques = pd.factorize(q)
    return _minmax(codes, len(uniques), s)


def interpolate(a: pd.DataFrame, b: pd.DataFrame, weight_b: float = 0.5, depth: int = 1000) -> pd.DataFrame:
    """Convex combination of two runs' per-query min-max normalised scores.

    ``score = (1 - weight_b) · norm_a + weight_b · norm_b``, where a document missing from one run
    counts as 0 in that run. Queries present in only one run keep that run's (weighted) scores.

    Args:
        a, b: run tables; in the pipelines ``a`` is BM25 and ``b`` dense.
        weight_b: weight of ``b`` in [0, 1] (0 keeps ``a``'s order, 1 keeps ``b``'s).
        depth: documents kept per query.

    Returns:
        The fused run, sorted (see the module docstring), at most ``depth`` rows per query.
    """
    if not 0.0 <= weight_b <= 1.0:
        raise ConfigError(f"interpolation weight must be in [0, 1], got {weight_b}")
    _check_depth(depth)
    (qa, da, sa), (qb, db, sb) = _arrays(a, "interpolation input a"), _arrays(b, "interpolation input b")
    q, d = np.concatenate([qa, qb]), np.concatenate([da, db])
    codes, uniques = pd.factorize(q)
    norm_a = _minmax(codes[:len(qa)], len(uniques), sa)
    norm_b = _minmax(codes[len(qa):], len(uniques), sb)
    source = np.repeat([0, 1], [len(qa), len(qb)])
    return _sum_and_sort(q, d, np.concatenate([(1.0 - weight_b) * norm_a, weight_b * norm_b]), source,
                         ("interpolation input a", "interpolation input b"), depth)


def reciprocal_rank_fusion(runs: Sequence[pd.DataFrame], k: int = 60, depth: int = 1000) -> pd.DataFrame:
    """Reciprocal-rank fusion: ``score(d) = Σ_runs 1 / (k + rank_run(d))`` over the runs that retrieved ``d``.

    Ranks start at 1 within each query of each run; equal scores within a run are ranked by doc id
    ascending so the result does not depend on row order.

    Args:
        runs: one or more run tables.
        k: the smoothing constant (60 in Cormack et al.), >= 0.
        depth: documents kept per query.

    Returns:
        The fused run, sorted (see the module docstring), at most ``depth`` rows per query.
    """
    if not len(runs):
        raise ConfigError("reciprocal rank fusion needs at least one run")
    if k < 0:
        raise ConfigError(f"reciprocal rank fusion k must be >= 0, got {k}")
    _check_depth(depth)
    qs, ds, contributions = [], [], []
    for i, run in enumerate(runs):
        q, d, s = _arrays(run, f"fusion input {i}")
        perm, pos = _order(_sort_keys(q), s, _sort_keys(d))
        rank = np.empty(len(q), dtype=np.float64)
        rank[perm] = pos + 1
        qs.append(q)
        ds.append(d)
        contributions.append(1.0 / (k + rank))
    source = np.repeat(np.arange(len(runs)), [len(q) for q in qs])
    return _sum_and_sort(np.concatenate(qs), np.concatenate(ds), np.concatenate(contributions), source,
                         [f"fusion input {i}" for i in range(len(runs))], depth)


def _arrays(run: pd.DataFrame, what: str = "run") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's query ids, doc ids (object arrays) and scores (float64)."""
    check_columns(run, RUN_COLUMNS, what)
    return (run[QUERY_ID].to_numpy(dtype=object), run[DOC_ID].to_numpy(dtype=object),
            run[SCORE].to_numpy(dtype=np.float64))


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """Integer keys that sort like ``values`` (equal values, equal keys)."""
    codes, uniques = pd.factorize(values)
    if pd.api.types.infer_dtype(uniques, skipna=False) == "string":
        # A fixed-width unicode array sorts in C; argsort over Python str objects is ~10x slower.
        uniques = uniques.astype(str)
    rank_of = np.empty(len(uniques), dtype=np.int64)
    rank_of[np.argsort(uniques, kind="stable")] = np.arange(len(uniques))
    return rank_of[codes]


def _order(qkey: np.ndarray, score: np.ndarray, dkey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The permutation sorting rows by query, score descending, doc; and each sorted row's 0-based rank in its query."""
    perm = np.lexsort((dkey, -score, qkey))
    n = len(perm)
    q = qkey[perm]
    first = np.ones(n, dtype=bool)
    first[1:] = q[1:] != q[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0)) if n else np.zeros(0, dtype=np.int64)
    return perm, np.arange(n) - start


def _minmax(codes: np.ndarray, n_queries: int, scores: np.ndarray) -> np.ndarray:
    lo = np.full(n_queries, np.inf)
    hi = np.full(n_queries, -np.inf)
    np.minimum.at(lo, codes, scores)
    np.maximum.at(hi, codes, scores)
    span = (hi - lo)[codes]
    return np.where(span > 0, (scores - lo[codes]) / np.where(span > 0, span, 1.0), 1.0)


def _sum_and_sort(q: np.ndarray, d: np.ndarray, values: np.ndarray, source: np.ndarray, names: Sequence[str],
                  depth: int) -> pd.DataFrame:
    """Sum ``values`` per (query, doc), then sort and cut as :func:`sort_run`.

    Args:
        q, d, values: the rows of every input run, concatenated.
        source: each row's input run (an index into ``names``), to reject a document twice in one run.
        names: the input runs' names, for that error.
        depth: rows kept per query.
    """
    qkey, dkey = _sort_keys(q), _sort_keys(d)
    pair = qkey * (int(dkey.max()) + 1 if len(dkey) else 1) + dkey
    keys, first, inverse = np.unique(pair, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    per_source = inverse * len(names) + source
    if len(np.unique(per_source)) < len(per_source):
        _, at, counts = np.unique(per_source, return_index=True, return_counts=True)
        i = at[np.argmax(counts > 1)]
        raise TasbRayError(f"{names[source[i]]}: document {d[i]!r} appears twice for query {q[i]!r}")
    score = np.bincount(inverse, weights=values, minlength=len(keys))
    perm, pos = _order(qkey[first], score, dkey[first])
    perm = perm[pos < depth]
    rows = first[perm]
    return _frame(q[rows], d[rows], score[perm])


def _frame(q: np.ndarray, d: np.ndarray, s: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({QUERY_ID: q, DOC_ID: d, SCORE: s.astype(np.float64, copy=False)})


def _check_depth(depth: int) -> None:
    if depth < 1:
        raise ConfigError(f"fusion depth must be >= 1, got {depth}")
