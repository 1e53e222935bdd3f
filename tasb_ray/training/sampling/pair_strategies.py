"""Pair strategies: which of a query's teacher-scored (positive, negative) pairs a batch trains on.

Every strategy reduces to "pick one of the query's groups uniformly, then a pair within it": it labels each pair
with a group index (or -1 to exclude it), and :class:`tasb_ray.training.sampling.sampler.BatchSampler` draws from
the groups. ``random``: one group with all pairs. ``bins`` (balanced margin sampling, the "B" of TAS-B): the
non-empty equal-width bins of the query's teacher margins. ``hard-margin``: one group with the pairs whose margin
is below ``margin_cutoff``.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling",
    SIGIR 2021, section 3.2 (balanced margin sampling).
"""

from __future__ import annotations

import numpy as np

from tasb_ray.training.sampling.config import PairStrategy, SamplerConfig


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


#: Pairs per vectorised slice where a per-pair computation has several float64 temporaries: bounds the working set
#: (a few x 8 B x this) whatever the number of pairs (40M for MS MARCO).
CHUNK = 1 << 22


def query_extremes(margins: np.ndarray, query: np.ndarray, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the (min, max) of its pairs' margins (pairs in any order; a query without pairs gets inf, -inf)."""
    lo = np.full(n_queries, np.inf)
    hi = np.full(n_queries, -np.inf)
    np.minimum.at(lo, query, margins)
    np.maximum.at(hi, query, margins)
    return lo, hi


def margin_bins(margins: np.ndarray, query: np.ndarray, n_queries: int, h: int) -> np.ndarray:
    """Per pair, its bin among ``h`` equal-width bins of its query's margins (int32; pairs in any order).

    Computed in slices of :data:`CHUNK` pairs, so the float64 temporaries stay bounded."""
    lo, hi = query_extremes(margins, query, n_queries)
    out = np.empty(len(margins), dtype=np.int32)
    for a in range(0, len(margins), CHUNK):
        q = query[a:a + CHUNK]
        out[a:a + CHUNK] = _histogram_bins(margins[a:a + CHUNK], lo[q], hi[q], h)
    return out


class UniformPairs:
    """``random``: every pair of a query is equally likely.

    ``groups(margins, query, n_queries)`` labels each pair (in any order; ``query`` its query's code) with its
    group in ``[0, groups_per_query)`` or -1 (excluded), as int32.
    """

    name = PairStrategy.RANDOM
    groups_per_query = 1

    def __init__(self, config: SamplerConfig):
        self.config = config

    def groups(self, margins: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
        return np.zeros(len(query), dtype=np.int32)


class BalancedMarginBins(UniformPairs):
    """``bins``: a non-empty margin bin of the query uniformly, then a pair in it (bins as in the authors' code)."""

    name = PairStrategy.BINS

    @property
    def groups_per_query(self) -> int:
        return self.config.bins

    def groups(self, margins: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
        return margin_bins(margins, query, n_queries, self.config.bins)


class HardMargin(UniformPairs):
    """``hard-margin``: pairs with margin below ``margin_cutoff``; a query with none keeps its smallest-margin pair(s)."""

    name = PairStrategy.HARD_MARGIN

    def groups(self, margins: np.ndarray, query: np.ndarray, n_queries: int) -> np.ndarray:
        assert self.config.margin_cutoff is not None
        eligible = margins < self.config.margin_cutoff
        has_eligible = np.bincount(query[eligible], minlength=n_queries) > 0
        lo, _ = query_extremes(margins, query, n_queries)
        out = np.full(len(margins), -1, dtype=np.int32)
        for a in range(0, len(margins), CHUNK):
            q, m, e = query[a:a + CHUNK], margins[a:a + CHUNK], eligible[a:a + CHUNK]
            out[a:a + CHUNK][e | (~has_eligible[q] & (m == lo[q]))] = 0
        return out


PAIR_STRATEGY_CLASSES = {s.name.value: s for s in (UniformPairs, BalancedMarginBins, HardMargin)}


def pair_strategy(config: SamplerConfig) -> UniformPairs:
    """The strategy object ``config`` names (``effective_pair_strategy``)."""
    return PAIR_STRATEGY_CLASSES[config.effective_pair_strategy](config)
