"""Batch composition for TAS-Balanced training (Hofstätter et al., SIGIR 2021, arXiv 2104.06967).

Two independent choices make a batch:

* **Query composition** (``SamplerConfig.sampling``): ``random`` shuffles all training queries per epoch;
  ``tas`` / ``tas-balanced`` fill each batch from one randomly chosen topic cluster.
* **Pair choice** (``SamplerConfig.pair_strategy``): for each query, which (positive, negative) pair of the
  teacher-scored pairs to train on. ``random`` is uniform over the query's pairs; ``bins`` ("balanced") splits
  the query's teacher margins into equal-width bins and picks a non-empty bin uniformly, then a pair within it;
  ``hard-margin`` only uses pairs whose margin is below ``margin_cutoff``.

``tas-balanced`` is tas composition + bins; ``tas`` is tas composition + random pairs; ``random`` is random
composition + random pairs. ``pair_strategy`` overrides the pairing of any of them.

Epochs and reproducibility: one epoch uses every training query exactly once. Each epoch's whole plan (query
order, batch boundaries, pair choice) is drawn at the epoch's start from ``np.random.default_rng([seed,
epoch])``, so the sampler's state is just ``(epoch, batch index)`` and a resumed sampler continues with
exactly the batches an uninterrupted one would have produced. The iterator is endless (epoch after epoch);
the trainer decides how many steps to take.

Differences from the authors' loader (matchmaker ``TASBalancedDatasetLoader``), on purpose:

* Their cluster choice is with replacement and has no epochs, so a query can appear twice in one batch and some
  queries may go unseen for long; here a cluster is drawn among those with queries left this epoch, without replacement.
* With ``bins`` they build ``np.arange(min, max, (max - min) / h)`` edges, which crashes when all of a query's
  margins are equal; here such a query gets a single bin.
* With ``bins`` they drop queries that have a single pair from training; here that pair is the query's only bin.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Union

import numpy as np
import pandas as pd

from tasb_ray.errors import ConfigError
from tasb_ray.fileio import write_parquet
from tasb_ray.schema import PAIRS_COLUMNS

SAMPLINGS = ("random", "tas", "tas-balanced")
PAIR_STRATEGIES = ("random", "bins", "hard-margin")
PLAN_COLUMNS = ("batch", "qid", "pos_pid", "neg_pid")
_STATE_VERSION = 1
_PLAN_HASH_HEADER = "tasb_ray.plan.v1\tbatch\tqid\tpos_pid\tneg_pid\n"

ClusterAssignment = Union[pd.Series, pd.DataFrame, Mapping[str, int]]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


@dataclass(frozen=True)
class SamplerConfig:
    """How batches are composed. Invalid values raise :class:`ConfigError` naming the field.

    ``pair_strategy=None`` means ``bins`` for ``tas-balanced`` and ``random`` otherwise.
    ``margin_cutoff`` is required by (and only allowed with) ``hard-margin``: a query's pairs with teacher margin
    ``pos_score - neg_score < margin_cutoff`` are eligible; a query with no such pair falls back to its
    smallest-margin pair(s) (all pairs tied at the minimum, uniformly), so every query stays trainable.
    """

    sampling: str = "tas-balanced"
    pair_strategy: str | None = None
    batch_size: int = 32
    bins: int = 10
    margin_cutoff: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ConfigError(f"sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")
        if self.pair_strategy is not None and self.pair_strategy not in PAIR_STRATEGIES:
            raise ConfigError(f"pair_strategy must be one of {list(PAIR_STRATEGIES)} or null, got {self.pair_strategy!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not _is_int(self.bins) or self.bins < 1:
            raise ConfigError(f"bins must be an integer >= 1, got {self.bins!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.margin_cutoff is not None:
            if isinstance(self.margin_cutoff, bool) or not isinstance(self.margin_cutoff, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(self.margin_cutoff):
                raise ConfigError(f"margin_cutoff must be a finite number or null, got {self.margin_cutoff!r}")
            if self.effective_pair_strategy != "hard-margin":
                raise ConfigError(f"margin_cutoff is only used by pair_strategy 'hard-margin', "
                                  f"not {self.effective_pair_strategy!r}; remove it")
        elif self.effective_pair_strategy == "hard-margin":
            raise ConfigError("margin_cutoff is required when pair_strategy is 'hard-margin'")

    @property
    def effective_pair_strategy(self) -> str:
        if self.pair_strategy is not None:
            return self.pair_strategy
        return "bins" if self.sampling == "tas-balanced" else "random"

    @property
    def uses_clusters(self) -> bool:
        return self.sampling != "random"


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

    def __len__(self) -> int:
        return len(self.qids)

    @property
    def used_clusters(self) -> list[int]:
        """Distinct clusters in order of first use (the drawn cluster first, then top-up clusters)."""
        return list(dict.fromkeys(self.clusters)) if self.clusters is not None else []


@dataclass(frozen=True)
class _EpochPlan:
    pair_idx: np.ndarray  # indices into the sampler's sorted pair arrays, in batch order
    offsets: np.ndarray  # batch b is pair_idx[offsets[b]:offsets[b + 1]]
    topped_up: np.ndarray  # bool per batch


def _histogram_bins(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, h: int) -> np.ndarray:
    """Per-element bin index in [0, h) of equal-width bins over [lo, hi], the last bin closed.

    Vectorised over many queries at once (``lo``/``hi`` are per element). Reproduces ``numpy.histogram``'s own
    arithmetic and edge correction so that values on a bin edge land in the same bin as there; ``lo == hi``
    gives bin 0 (numpy would widen the range, the authors' code would crash).
    """
    width = hi - lo
    flat = width == 0
    safe_width = np.where(flat, 1.0, width)
    step = safe_width / h

    def edge(k: np.ndarray) -> np.ndarray:  # np.linspace(lo, hi, h + 1)[k]
        return np.where(k >= h, hi, k * step + lo)

    with np.errstate(invalid="ignore", over="ignore"):
        idx = ((x - lo) * (h / safe_width)).astype(np.int64)
    idx = np.clip(idx, 0, h - 1)
    idx = np.where(x < edge(idx), idx - 1, idx)
    idx = np.where((x >= edge(idx + 1)) & (idx != h - 1), idx + 1, idx)
    idx = np.clip(idx, 0, h - 1)
    idx[flat] = 0
    return idx


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
                 clusters: ClusterAssignment | None = None) -> None:
        self.config = config if config is not None else SamplerConfig()
        missing = [c for c in PAIRS_COLUMNS if c not in pairs.columns]
        if missing:
            raise ConfigError(f"pairs table lacks columns {missing} (needs {list(PAIRS_COLUMNS)})")
        if len(pairs) == 0:
            raise ConfigError("pairs table is empty: no training pairs to sample from")

        # Sorting by qid (stable) makes the plan independent of the order of queries in the input file.
        q_codes, qids = pd.factorize(pairs["qid"].astype(str), sort=True)
        order = np.argsort(q_codes, kind="stable")
        self._qids = np.asarray(qids, dtype=object)
        self._pair_query = q_codes[order].astype(np.int64)
        self._pos_pid = pairs["pos_pid"].astype(str).to_numpy(dtype=object)[order]
        self._neg_pid = pairs["neg_pid"].astype(str).to_numpy(dtype=object)[order]
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
        if self.config.uses_clusters:
            assert self._query_cluster is not None
            c_codes, _ = pd.factorize(self._query_cluster, sort=True)
            self._cluster_code = c_codes.astype(np.int64)
            self._cluster_size = np.bincount(self._cluster_code)
            self._cluster_start = np.concatenate(([0], np.cumsum(self._cluster_size)[:-1]))

        self._epoch = 0
        self._batch = 0
        self._plan: _EpochPlan | None = None

    # -- precomputation ---------------------------------------------------------------------------------------

    def _build_groups(self, margins: np.ndarray, starts: np.ndarray) -> None:
        """Reduce every pair strategy to "pick one of the query's groups uniformly, then a pair within it".

        random: one group with all pairs; bins: the non-empty margin bins; hard-margin: one group with the
        eligible pairs. Stored CSR-style so a draw for many queries is two ``rng.integers`` calls.
        """
        cfg = self.config
        strategy = cfg.effective_pair_strategy
        q = self._pair_query
        n_q = len(self._qids)
        if strategy == "random":
            group = np.zeros(len(q), dtype=np.int64)
        elif strategy == "bins":
            lo = np.minimum.reduceat(margins, starts)[q]
            hi = np.maximum.reduceat(margins, starts)[q]
            group = _histogram_bins(margins, lo, hi, cfg.bins)
        else:
            assert cfg.margin_cutoff is not None
            eligible = margins < cfg.margin_cutoff
            has_eligible = np.bincount(q, weights=eligible.astype(np.float64), minlength=n_q) > 0
            smallest = margins == np.minimum.reduceat(margins, starts)[q]
            group = np.where(eligible | (~has_eligible[q] & smallest), 0, -1)

        kept = np.flatnonzero(group >= 0)
        members = kept[np.lexsort((group[kept], q[kept]))]
        key = q[members] * (cfg.bins if strategy == "bins" else 1) + group[members]
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

    def _random_composition(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = rng.permutation(self.num_queries)
        offsets = np.append(np.arange(0, self.num_queries, self.config.batch_size), self.num_queries)
        return queries, offsets, np.zeros(len(offsets) - 1, dtype=bool)

    def _tas_composition(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bs = self.config.batch_size
        # One random key per query shuffles every cluster's members in a single vectorised call.
        shuffled = np.lexsort((rng.random(self.num_queries), self._cluster_code))
        ptr = self._cluster_start.tolist()
        left = self._cluster_size.tolist()
        active = list(range(len(left)))  # clusters with unused queries this epoch
        parts: list[np.ndarray] = []
        offsets = [0]
        topped: list[bool] = []
        while active:
            need, used = bs, 0
            while need and active:
                j = int(rng.integers(len(active)))
                c = active[j]
                take = min(need, left[c])
                parts.append(shuffled[ptr[c]:ptr[c] + take])
                ptr[c] += take
                left[c] -= take
                need -= take
                used += 1
                if left[c] == 0:  # swap-remove keeps the draw O(1) and deterministic
                    active[j] = active[-1]
                    active.pop()
            offsets.append(offsets[-1] + bs - need)
            topped.append(used > 1)
        return np.concatenate(parts), np.asarray(offsets), np.asarray(topped, dtype=bool)

    def _draw_pairs(self, queries: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        group = self._query_first_group[queries] + rng.integers(0, self._query_ngroups[queries])
        return self._members[self._group_start[group] + rng.integers(0, self._group_size[group])]

    def _epoch_plan(self, epoch: int) -> _EpochPlan:
        rng = np.random.default_rng([self.config.seed, epoch])
        if self.config.uses_clusters:
            queries, offsets, topped = self._tas_composition(rng)
        else:
            queries, offsets, topped = self._random_composition(rng)
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
        return Batch(
            qids=self._qids[q].tolist(),
            pos_pids=self._pos_pid[idx].tolist(),
            neg_pids=self._neg_pid[idx].tolist(),
            pos_scores=self._pos_score[idx],
            neg_scores=self._neg_score[idx],
            clusters=self._query_cluster[q].tolist() if self._query_cluster is not None else None,
            topped_up=topped,
        )

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


# -- plans ------------------------------------------------------------------------------------------------------

def build_plan(sampler: BatchSampler, num_batches: int) -> pd.DataFrame:
    """The next ``num_batches`` batches of ``sampler`` as rows ``batch, qid, pos_pid, neg_pid`` (``batch``
    counts from 0 at the sampler's current position). The sampler itself is not advanced."""
    if not _is_int(num_batches) or num_batches < 0:
        raise ConfigError(f"num_batches must be an integer >= 0, got {num_batches!r}")
    probe = sampler.fork()
    chunks: list[np.ndarray] = []
    sizes: list[int] = []
    for _ in range(num_batches):
        idx, _topped = probe._next_indices()
        chunks.append(idx)
        sizes.append(len(idx))
    idx = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return pd.DataFrame({
        "batch": np.repeat(np.arange(num_batches, dtype=np.int64), sizes),
        "qid": sampler._qids[sampler._pair_query[idx]],
        "pos_pid": sampler._pos_pid[idx],
        "neg_pid": sampler._neg_pid[idx],
    })


def _check_plan(df: pd.DataFrame) -> None:
    if list(df.columns) != list(PLAN_COLUMNS):
        raise ConfigError(f"plan must have columns {list(PLAN_COLUMNS)} in that order, got {list(df.columns)}")


def write_plan(df: pd.DataFrame, path: str | os.PathLike) -> None:
    _check_plan(df)
    write_parquet(path, df.reset_index(drop=True))


def read_plan(path: str | os.PathLike) -> pd.DataFrame:
    df = pd.read_parquet(path)
    _check_plan(df)
    out = pd.DataFrame({"batch": df["batch"].to_numpy(dtype=np.int64)})
    for col in PLAN_COLUMNS[1:]:
        out[col] = df[col].astype(str).to_numpy(dtype=object)
    return out


def plan_hash(df: pd.DataFrame) -> str:
    """sha256 hex of the plan's ordered rows as ``batch<TAB>qid<TAB>pos_pid<TAB>neg_pid<LF>`` lines (UTF-8)
    after a version header. Parquet bytes are not used: they vary with the writer and its settings."""
    _check_plan(df)
    ids = [df[c].astype(str) for c in PLAN_COLUMNS[1:]]
    for col, s in zip(PLAN_COLUMNS[1:], ids):
        if s.str.contains("[\t\n]", regex=True).any():
            raise ValueError(f"plan column {col!r} has an id containing a tab or newline; cannot hash unambiguously")
    lines = df["batch"].astype(np.int64).astype(str) + "\t" + ids[0] + "\t" + ids[1] + "\t" + ids[2] + "\n"
    h = hashlib.sha256(_PLAN_HASH_HEADER.encode())
    h.update("".join(lines.tolist()).encode("utf-8"))
    return h.hexdigest()
