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


@dataclass(frozen=True)
class _EpochPlan:
    pair_idx: np.ndarray  # indices into the sampler's sorted pair arrays, in batch order
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
    """

    def __init__(self, pairs: pd.DataFrame, config: SamplerConfig | None = None,
                 clusters: ClusterAssignment | None = None, ids: PairIds | None = None) -> None:
        self.config = config if config is not None else SamplerConfig()
        missing = [c for c in PAIRS_COLUMNS if c not in pairs.columns]
        if missing:
            raise ConfigError(f"pairs table lacks columns {missing} (needs {list(PAIRS_COLUMNS)})")
        if len(pairs) == 0:
            raise ConfigError("pairs table is empty: no training pairs to sample from")

        # Sorting by the external qid (stable) makes the plan independent of the order of queries in the input, and
        # the same for a string table and its row-coded form. Internally every id is an integer code; strings are
        # only made for a batch or a plan (40M pairs as Python strings would be GBs).
        if ids is None:
            q_codes, qids = pd.factorize(pairs["qid"].astype(str), sort=True)
            self._qids = np.asarray(qids, dtype=object)
            self._query_row = None
            n = len(pairs)
            p_codes, p_table = pd.factorize(np.concatenate([pairs["pos_pid"].astype(str).to_numpy(dtype=object),
                                                            pairs["neg_pid"].astype(str).to_numpy(dtype=object)]))
            self._pid_table = np.asarray(p_table, dtype=object)
            pos_code, neg_code = p_codes[:n], p_codes[n:]
        else:
            rows, q_codes = np.unique(pairs["qid"].to_numpy(dtype=np.int64), return_inverse=True)
            names = take_ids(ids.queries, rows)
            by_name = np.argsort(names, kind="stable")
            rank = np.empty_like(by_name)
            rank[by_name] = np.arange(len(by_name))
            q_codes = rank[q_codes]
            self._qids, self._query_row = names[by_name], rows[by_name]
            self._pid_table = ids.passages
            pos_code = pairs["pos_pid"].to_numpy(dtype=np.int64)
            neg_code = pairs["neg_pid"].to_numpy(dtype=np.int64)
        order = np.argsort(q_codes, kind="stable")
        self._pair_query = q_codes[order].astype(np.int64)
        self._pos_code = pos_code[order]
        self._neg_code = neg_code[order]
        self._pos_score = pairs["pos_score"].to_numpy(dtype=np.float64)[order]
        self._neg_score = pairs["neg_score"].to_numpy(dtype=np.float64)[order]
        margins = self._pos_score - self._neg_score
        if not np.isfinite(margins).all():
            raise ConfigError(f"pairs: {int((~np.isfinite(margins)).sum())} rows have a non-finite "
                              f"pos_score or neg_score")

        n_q = len(self._qids)
        counts = np.bincount(self._pair_query, minlength=n_q)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        self._build_groups(margins, starts)

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

    def _build_groups(self, margins: np.ndarray, starts: np.ndarray) -> None:
        """Reduce every pair strategy to "pick one of the query's groups uniformly, then a pair within it".

        random: one group with all pairs; bins: the non-empty margin bins; hard-margin: one group with the
        eligible pairs. Stored CSR-style so a draw for many queries is two ``rng.integers`` calls.
        """
        strategy = pair_strategy(self.config)
        q = self._pair_query
        n_q = len(self._qids)
        group = strategy.groups(margins, q, starts, n_q)

        kept = np.flatnonzero(group >= 0)
        members = kept[np.lexsort((group[kept], q[kept]))]
        key = q[members] * strategy.groups_per_query + group[members]
        group_start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        group_query = q[members[group_start]]
        self._members = members
        self._group_start = group_start
        self._group_size = np.diff(np.concatenate((group_start, [len(members)])))
        self._query_ngroups = np.bincount(group_query, minlength=n_q)
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
        return self._members[self._group_start[group] + rng.integers(0, self._group_size[group])]

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
        return Batch(
            qids=qids.tolist(),
            pos_pids=pos.tolist(),
            neg_pids=neg.tolist(),
            pos_scores=self._pos_score[idx],
            neg_scores=self._neg_score[idx],
            clusters=self._query_cluster[q].tolist() if self._query_cluster is not None else None,
            topped_up=topped,
            query_rows=self._query_row[q] if coded else None,
            pos_rows=self._pos_code[idx] if coded else None,
            neg_rows=self._neg_code[idx] if coded else None,
        )

    def external_ids(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(qids, pos_pids, neg_pids) of pair indices ``idx`` as object arrays of the external ids."""
        return (self._qids[self._pair_query[idx]], take_ids(self._pid_table, self._pos_code[idx]),
                take_ids(self._pid_table, self._neg_code[idx]))

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
