"""Batch composition for TAS-Balanced training (Hofstätter et al., SIGIR 2021, arXiv 2104.06967).

The sampler: an endless, resumable iterator of batches. Two independent choices make a batch, each a small class
chosen by name (:mod:`.compositions`, :mod:`.pair_strategies`):

* **Query composition** (``SamplerConfig.sampling``): ``random`` shuffles all training queries per epoch;
  ``tas`` / ``tas-balanced`` fill each batch from one randomly chosen topic cluster; ``tas-authors`` is the
  authors' loader (a cluster drawn with replacement per batch, no epoch bookkeeping), to compare against.
* **Pair choice** (``SamplerConfig.pair_strategy``): for each query, which (positive, negative) pair of the
  teacher-scored pairs to train on. ``random`` is uniform over the query's pairs; ``bins`` ("balanced") splits
  the query's teacher margins into equal-width bins and picks a non-empty bin uniformly, then a pair within it;
  ``hard-margin`` only uses pairs whose margin is below ``margin_cutoff``.

``tas-balanced`` and ``tas-authors`` use bins; ``tas`` is tas composition + random pairs; ``random`` is random
composition + random pairs. ``pair_strategy`` overrides the pairing of any of them.

Epochs and reproducibility: one epoch uses every training query exactly once. Each epoch's whole plan (query
order, batch boundaries, pair choice) is drawn at the epoch's start from ``np.random.default_rng([seed,
epoch])``, so the sampler's state is just ``(epoch, batch index)`` and a resumed sampler continues with
exactly the batches an uninterrupted one would have produced. The iterator is endless (epoch after epoch);
the trainer decides how many steps to take.

Differences from the authors' loader (matchmaker ``TASBalancedDatasetLoader``), on purpose:

* Their cluster choice is with replacement and has no epochs, so a query can appear twice in one batch and some
  queries may go unseen for long; here a cluster is drawn among those with queries left this epoch, without
  replacement (``tas-authors`` offers theirs; :mod:`.stats` measures both).
* With ``bins`` they build ``np.arange(min, max, (max - min) / h)`` edges, which crashes when all of a query's
  margins are equal; here such a query gets a single bin.
* With ``bins`` they drop queries that have a single pair from training; here that pair is the query's only bin.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
import pandas as pd
import pyarrow as pa

from tasb_ray.errors import ConfigError
from tasb_ray.schema import PAIRS_COLUMNS
from tasb_ray.training.sampling.compositions import composition
from tasb_ray.training.sampling.config import SamplerConfig
from tasb_ray.training.sampling.pair_strategies import pair_strategy

_STATE_VERSION = 1

ClusterAssignment = Union[pd.Series, pd.DataFrame, Mapping[str, int]]
PairsLike = Union[pd.DataFrame, pa.Table, Mapping[str, Any]]


@dataclass
class Batch:
    """One training batch: row ``i`` is query ``qids[i]`` with its chosen (positive, negative) pair.

    ``clusters`` holds each query's cluster id (None when the sampler got no cluster assignment).
    ``topped_up`` is True when a TAS batch had to take queries from more than one cluster because its first
    cluster ran out of unused queries this epoch.
    """

    qids: list[str]
    pos_pids: list[str]
    neg_pids: list[str]
    pos_scores: np.ndarray
    neg_scores: np.ndarray
    clusters: list[int] | None
    topped_up: bool
    # With a row-coded pairs table (:class:`PairIds`): the rows of the batch's queries and passages in the id tables,
    # so texts are looked up by position rather than by string.
    query_rows: np.ndarray | None = None
    pos_rows: np.ndarray | None = None
    neg_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.qids)

    @property
    def used_clusters(self) -> list[int]:
        """Distinct clusters in order of first use (the drawn cluster first, then top-up clusters)."""
        return list(dict.fromkeys(self.clusters)) if self.clusters is not None else []


@dataclass(frozen=True)
class PairIds:
    """The id tables of a pairs table whose ``qid``, ``pos_pid``, ``neg_pid`` columns hold integer rows of them
    (e.g. a prepared dataset's ``queries.parquet`` and ``corpus.parquet`` id columns): Arrow or NumPy arrays."""

    queries: Any
    passages: Any


def take_ids(table, rows: np.ndarray) -> np.ndarray:
    """``table[rows]`` as an object array of strings, for an Arrow or NumPy id (or text) table: the edge where
    strings are materialised (a batch, a plan)."""
    rows = np.asarray(rows, dtype=np.int64)
    if isinstance(table, pa.ChunkedArray):
        # ChunkedArray.take concatenates every chunk first (GBs for a corpus' texts): take from each chunk instead.
        ends = np.cumsum([len(c) for c in table.chunks])
        chunk = np.searchsorted(ends, rows, side="right")
        out = np.empty(len(rows), dtype=object)
        for c in np.unique(chunk):
            sel = np.flatnonzero(chunk == c)
            local = rows[sel] - (ends[c - 1] if c else 0)
            out[sel] = table.chunk(int(c)).take(pa.array(local)).to_numpy(zero_copy_only=False)
        return out
    if isinstance(table, pa.Array):
        return np.asarray(table.take(pa.array(rows)).to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(table, dtype=object)[rows]


def pair_columns(pairs: PairsLike) -> dict[str, np.ndarray]:
    """The five :data:`PAIRS_COLUMNS` of ``pairs`` (a pandas DataFrame, a pyarrow Table or a mapping of name to
    array) as NumPy arrays: views where the input allows (a one-chunk Arrow column without nulls, a NumPy-backed
    frame column), so a 40M-row table is not copied."""
    if isinstance(pairs, pd.DataFrame):
        names, get = pairs.columns, lambda c: pairs[c].to_numpy()
    elif isinstance(pairs, pa.Table):
        names, get = pairs.column_names, lambda c: pairs[c].to_numpy()
    elif isinstance(pairs, Mapping):
        names, get = pairs.keys(), lambda c: np.asarray(pairs[c])
    else:
        raise ConfigError(f"pairs must be a pandas DataFrame, a pyarrow Table or a mapping of columns, "
                          f"got {type(pairs).__name__}")
    missing = [c for c in PAIRS_COLUMNS if c not in names]
    if missing:
        raise ConfigError(f"pairs table lacks columns {missing} (needs {list(PAIRS_COLUMNS)})")
    cols = {c: get(c) for c in PAIRS_COLUMNS}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise ConfigError(f"pairs columns differ in length: {({c: len(v) for c, v in cols.items()})}")
    if not lengths.pop():
        raise ConfigError("pairs table is empty: no training pairs to sample from")
    return cols


def _check_rows(rows: np.ndarray, n_rows: int, column: str) -> None:
    if rows.dtype.kind not in "iu":
        raise ConfigError(f"pairs column {column!r} must hold integer rows of the id table with ids given, "
                          f"got dtype {rows.dtype}")
    lo, hi = int(rows.min()), int(rows.max())
    if lo < 0 or hi >= n_rows:
        raise ConfigError(f"pairs column {column!r} holds row {lo if lo < 0 else hi}, outside the id table's "
                          f"{n_rows} rows")


def _floats(values: np.ndarray) -> np.ndarray:
    """float64 scores: the input itself when it already is (no 40M-row copy), else converted."""
    return values if values.dtype == np.float64 else np.asarray(values, dtype=np.float64)


def _stable_order(key: np.ndarray, bound: int) -> np.ndarray:
    """``np.argsort(key, kind="stable")`` of unsigned keys below ``bound``, as int32 when it fits: LSD radix passes
    over 16-bit digits. NumPy radix-sorts 16-bit keys (O(n)) but timsorts wider ones (O(n log n), ~2x slower on 40M
    pairs); a stable sort's permutation is unique, so the result is the same."""
    index_type = np.int32 if len(key) < 2**31 else np.int64
    order = None
    shift = 0
    while order is None or bound > 1 << shift:
        digit = ((key if order is None else key[order]) >> key.dtype.type(shift)).astype(np.uint16)
        step = np.argsort(digit, kind="stable")
        del digit
        order = step.astype(index_type) if order is None else order[step]
        del step
        shift += 16
    return order


@dataclass(frozen=True)
class _EpochPlan:
    pair_idx: np.ndarray  # internal pair indices (see BatchSampler._build_groups), in batch order
    offsets: np.ndarray  # batch b is pair_idx[offsets[b]:offsets[b + 1]]
    topped_up: np.ndarray  # bool per batch


def _cluster_series(clusters: ClusterAssignment) -> pd.Series:
    if isinstance(clusters, pd.DataFrame):
        missing = [c for c in ("qid", "cluster") if c not in clusters.columns]
        if missing:
            raise ConfigError(f"clusters table lacks columns {missing} (needs 'qid', 'cluster')")
        s = pd.Series(clusters["cluster"].to_numpy(), index=clusters["qid"].astype(str).to_numpy())
    elif isinstance(clusters, pd.Series):
        s = pd.Series(clusters.to_numpy(), index=clusters.index.astype(str))
    elif isinstance(clusters, Mapping):
        s = pd.Series(list(clusters.values()), index=[str(k) for k in clusters.keys()], dtype=object)
    else:
        raise ConfigError(f"clusters must be a pandas Series/DataFrame or a mapping qid -> cluster, "
                          f"got {type(clusters).__name__}")
    if s.index.has_duplicates:
        dup = s.groupby(level=0).nunique()
        if (dup > 1).any():
            bad = dup[dup > 1].index[:3].tolist()
            raise ConfigError(f"clusters assigns {int((dup > 1).sum())} qids to more than one cluster, e.g. {bad}")
        s = s[~s.index.duplicated()]
    return s


class BatchSampler(Iterator[Batch]):
    """Endless iterator of :class:`Batch` es over ``pairs`` (columns ``qid, pos_pid, neg_pid, pos_score,
    neg_score``), composed as ``config`` says; ``clusters`` (qid -> int) is needed by ``tas``/``tas-balanced``
    and optional otherwise (then batches report their queries' clusters).

    Training queries are the qids present in ``pairs``; cluster entries for other qids are ignored, but a given
    assignment must cover every training query. Each TAS batch takes ``batch_size`` unused queries of one random
    cluster; only when that cluster runs out does it top up from further random clusters (``topped_up``).
    Every batch is full except an epoch's last one, which is kept even if short.
    The plan does not depend on the order of queries in ``pairs``, but does on the order of a query's pairs.
    All per-query structures are built once here, so drawing an epoch is a handful of vectorised NumPy calls
    plus one cheap Python step per TAS batch.

    ``pairs`` is a pandas DataFrame, a pyarrow Table or a mapping of column arrays (:func:`pair_columns`). With
    ``ids`` its id columns hold integer rows of ``ids``' tables (int32 as the teacher-file source writes them);
    those columns and float64 scores are kept as views of the input, not copied, so the input must not be modified
    while the sampler is in use. Working memory beyond them is a few int32/uint32 arrays of one entry per pair.
    """

    def __init__(self, pairs: PairsLike, config: SamplerConfig | None = None,
                 clusters: ClusterAssignment | None = None, ids: PairIds | None = None) -> None:
        self.config = config if config is not None else SamplerConfig()
        cols = pair_columns(pairs)

        # Sorting by the external qid (stable) makes the plan independent of the order of queries in the input, and
        # the same for a string table and its row-coded form. Internally every id is an integer code; strings are
        # only made for a batch or a plan (40M pairs as Python strings would be GBs).
        if ids is None:
            q_codes, qids = pd.factorize(pd.Series(cols["qid"], copy=False).astype(str), sort=True)
            self._qids = np.asarray(qids, dtype=object)
            self._query_row = None
            n = len(q_codes)
            p_codes, p_table = pd.factorize(np.concatenate([pd.Series(cols[c], copy=False).astype(str)
                                                            .to_numpy(dtype=object) for c in ("pos_pid", "neg_pid")]))
            self._pid_table = np.asarray(p_table, dtype=object)
            code_type = np.int32 if len(p_table) < 2**31 else np.int64
            self._pos_code, self._neg_code = p_codes[:n].astype(code_type), p_codes[n:].astype(code_type)
            q_codes = q_codes.astype(np.int32)
        else:
            q_codes = self._query_codes(cols["qid"], ids.queries)
            self._pid_table = ids.passages
            for c in ("pos_pid", "neg_pid"):
                _check_rows(cols[c], len(ids.passages), c)
            # The row columns are kept as given (int32 from the teacher-file source), not widened or copied.
            self._pos_code, self._neg_code = cols["pos_pid"], cols["neg_pid"]
        self._pos_score = _floats(cols["pos_score"])
        self._neg_score = _floats(cols["neg_score"])
        del cols
        self._build_groups(q_codes)

        self._query_cluster: np.ndarray | None = None
        if clusters is not None:
            self._query_cluster = self._assign_clusters(clusters)
        elif self.config.uses_clusters:
            raise ConfigError(f"sampling {self.config.sampling!r} needs a query -> cluster assignment (clusters is None)")
        cluster_code = None
        if self.config.uses_clusters:
            assert self._query_cluster is not None
            c_codes, _ = pd.factorize(self._query_cluster, sort=True)
            cluster_code = c_codes.astype(np.int64)
        self._composition = composition(self.config, len(self._qids), cluster_code)

        self._epoch = 0
        self._batch = 0
        self._plan: _EpochPlan | None = None

    # -- precomputation ---------------------------------------------------------------------------------------

    def _query_codes(self, q_rows: np.ndarray, table) -> np.ndarray:
        """Per pair, the rank (int32) of its query's external id among the training queries' ids; sets ``_qids``
        (ids in that order) and ``_query_row`` (their rows in ``table``). A presence mask over the table's rows
        replaces ``np.unique`` (a sort and int64 inverse of every pair)."""
        n_rows = len(table)
        _check_rows(q_rows, n_rows, "qid")
        present = np.zeros(n_rows, dtype=bool)
        present[q_rows] = True
        rows = np.flatnonzero(present)
        del present
        names = take_ids(table, rows)
        by_name = np.argsort(names, kind="stable")
        self._qids, self._query_row = names[by_name], rows[by_name]
        code_of_row = np.zeros(n_rows, dtype=np.int32)
        code_of_row[self._query_row] = np.arange(len(rows), dtype=np.int32)
        return code_of_row[q_rows]

    def _build_groups(self, q_codes: np.ndarray) -> None:
        """Reduce every pair strategy to "pick one of the query's groups uniformly, then a pair within it".

        random: one group with all pairs; bins: the non-empty margin bins; hard-margin: one group with the
        eligible pairs. The pairs get one internal order, by (query, group, input position): ``_order[i]`` is the
        input row of internal pair ``i``, and each group is a contiguous run of internal pairs, stored CSR-style
        so a draw for many queries is two ``rng.integers`` calls. The pair columns themselves are not permuted
        (no copy of 40M rows): a batch maps its few internal indices through ``_order``.
        """
        strategy = pair_strategy(self.config)
        n_q = len(self._qids)
        n = len(q_codes)
        # The margins live only here, so they (320 MB of float64 at MS MARCO's 40M pairs) are freed before the sort
        # keys are built.
        margins = self._pos_score - self._neg_score
        finite = np.isfinite(margins)
        if not finite.all():
            raise ConfigError(f"pairs: {int((~finite).sum())} rows have a non-finite pos_score or neg_score")
        del finite
        group = strategy.groups(margins, q_codes, n_q)
        del margins
        span = strategy.groups_per_query + 1  # excluded pairs (group -1) sort first within their query
        key_type = np.uint32 if n_q * span < 2**32 else np.uint64
        key = q_codes.astype(key_type)
        key *= key_type(span)
        key += (group + 1).astype(key_type)
        self._order = _stable_order(key, n_q * span)
        del key
        group = group[self._order]
        counts = np.bincount(q_codes, minlength=n_q)
        self._pair_query = np.repeat(np.arange(n_q, dtype=np.int32), counts)
        change = np.empty(n, dtype=bool)
        change[0] = True
        np.not_equal(self._pair_query[1:], self._pair_query[:-1], out=change[1:])
        change[1:] |= group[1:] != group[:-1]
        run_start = np.flatnonzero(change)
        del change
        run_size = np.diff(np.append(run_start, n))
        kept = group[run_start] >= 0
        del group
        self._group_start = run_start[kept]
        self._group_size = run_size[kept]
        self._query_ngroups = np.bincount(self._pair_query[self._group_start], minlength=n_q)
        self._query_first_group = np.concatenate(([0], np.cumsum(self._query_ngroups)[:-1]))
        assert (self._query_ngroups > 0).all()

    def _assign_clusters(self, clusters: ClusterAssignment) -> np.ndarray:
        s = _cluster_series(clusters).reindex(self._qids)
        absent = s.isna().to_numpy()
        if absent.any():
            examples = self._qids[absent][:3].tolist()
            raise ConfigError(f"clusters: {int(absent.sum())} of {len(self._qids)} training queries have no "
                              f"cluster assignment, e.g. {examples}")
        values = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values != np.floor(values))
        if bad.any():
            raise ConfigError(f"clusters: cluster ids must be integers, got {s[bad].iloc[0]!r} "
                              f"for qid {self._qids[bad][0]!r}")
        return values.astype(np.int64)

    # -- epoch plans ------------------------------------------------------------------------------------------

    @property
    def num_queries(self) -> int:
        return len(self._qids)

    @property
    def num_pairs(self) -> int:
        return len(self._pair_query)

    @property
    def batches_per_epoch(self) -> int:
        # Every batch but the last is full under both compositions, so this does not depend on the draw.
        return -(-self.num_queries // self.config.batch_size)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def batch_in_epoch(self) -> int:
        """Index within the current epoch of the next batch to be produced."""
        return self._batch

    def _draw_pairs(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        group = self._query_first_group[queries] + rng.integers(0, self._query_ngroups[queries])
        return self._group_start[group] + rng.integers(0, self._group_size[group])

    def _epoch_plan(self, epoch: int) -> _EpochPlan:
        rng = np.random.default_rng([self.config.seed, epoch])
        queries, offsets, topped = self._composition.draw(rng)
        return _EpochPlan(self._draw_pairs(queries, rng), offsets, topped)

    def _next_indices(self) -> tuple[np.ndarray, bool]:
        if self._batch >= self.batches_per_epoch:
            self._epoch += 1
            self._batch = 0
            self._plan = None
        if self._plan is None:
            self._plan = self._epoch_plan(self._epoch)
        b = self._batch
        idx = self._plan.pair_idx[self._plan.offsets[b]:self._plan.offsets[b + 1]]
        self._batch += 1
        return idx, bool(self._plan.topped_up[b])

    # -- iterator protocol and checkpointing ------------------------------------------------------------------

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> Batch:
        idx, topped = self._next_indices()
        q = self._pair_query[idx]
        qids, pos, neg = self.external_ids(idx)
        coded = self._query_row is not None
        rows = self._order[idx]
        return Batch(
            qids=qids.tolist(),
            pos_pids=pos.tolist(),
            neg_pids=neg.tolist(),
            pos_scores=self._pos_score[rows],
            neg_scores=self._neg_score[rows],
            clusters=self._query_cluster[q].tolist() if self._query_cluster is not None else None,
            topped_up=topped,
            query_rows=self._query_row[q] if coded else None,
            pos_rows=self._pos_code[rows] if coded else None,
            neg_rows=self._neg_code[rows] if coded else None,
        )

    def external_ids(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(qids, pos_pids, neg_pids) of pair indices ``idx`` as object arrays of the external ids."""
        rows = self._order[idx]
        return (self._qids[self._pair_query[idx]], take_ids(self._pid_table, self._pos_code[rows]),
                take_ids(self._pid_table, self._neg_code[rows]))

    def pair_margins(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Teacher margins ``pos_score - neg_score`` (float64) of internal pairs ``idx`` (default: all, in internal
        order, aligned with ``_pair_query``)."""
        rows = self._order if idx is None else self._order[idx]
        return self._pos_score[rows] - self._neg_score[rows]

    def fork(self) -> BatchSampler:
        """An independent sampler at the same position, sharing the (read-only) precomputed arrays."""
        return copy.copy(self)

    def state_dict(self) -> dict[str, Any]:
        """Position plus what identifies the sampler, so a checkpoint cannot silently resume another setup."""
        return {"version": _STATE_VERSION, "epoch": self._epoch, "batch": self._batch,
                "config": asdict(self.config), "num_queries": self.num_queries, "num_pairs": self.num_pairs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ConfigError(f"sampler state: unsupported version {state.get('version')!r}")
        mine = asdict(self.config)
        for name, value in dict(state.get("config", {})).items():
            if mine.get(name) != value:
                raise ConfigError(f"sampler state: {name} is {value!r} in the checkpoint but {mine.get(name)!r} now")
        for name in ("num_queries", "num_pairs"):
            if state.get(name) != getattr(self, name):
                raise ConfigError(f"sampler state: {name} is {state.get(name)!r} in the checkpoint but "
                                  f"{getattr(self, name)} now (different training pairs?)")
        epoch, batch = int(state["epoch"]), int(state["batch"])
        if epoch < 0 or not 0 <= batch <= self.batches_per_epoch:
            raise ConfigError(f"sampler state: position epoch={epoch} batch={batch} is out of range")
        if epoch != self._epoch:
            self._plan = None
        self._epoch, self._batch = epoch, batch
