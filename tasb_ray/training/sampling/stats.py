"""Plan statistics: what a run's batches are made of, so compositions and pair strategies can be compared.

Computed from a :class:`BatchSampler` and the number of batches of the run's plan, by drawing the same batches
again from a fork of the sampler (the plan's rows, as indices into the sampler's pairs):

* composition (when the sampler has a query -> cluster assignment, also for ``random``, where it is the chance
  level): ``single_cluster_batch_share`` (batches whose queries all come from one cluster),
  ``clusters_per_batch_mean``, ``same_cluster_query_pair_share`` (of the ordered pairs of distinct rows of a batch,
  the share whose queries share a cluster);
* coverage: ``repeated_query_batch_share`` (batches holding a query twice; only ``tas-authors`` can),
  ``queries_covered_share`` (distinct queries of the plan over the training queries),
  ``queries_covered_per_epoch`` (mean over the plan's whole epochs of ``batches_per_epoch`` batches; absent when
  the plan is shorter than an epoch), ``pairs_per_query_mean`` (pairs available per training query),
  ``samples_per_query_mean`` (plan rows per query the plan covers);
* margins: ``bin_hist`` (share of the plan's rows in each of the ``bins`` equal-width bins of its query's teacher
  margins, the bins of the balanced strategy), ``bin_hist_balanced`` (the same histogram if every row had picked a
  non-empty bin of its query uniformly, which is what ``bins`` does in expectation) and ``bin_tv`` (their total
  variation distance: about 0 for ``bins`` up to sampling noise, larger for ``random`` pairs, which follow where
  the pairs are).

The paper reports none of these; they are here to show whether the composition does on a given dataset what it
does on MS MARCO (e.g. on SciFact with k = 16 many TAS batches need a top-up).
"""

from __future__ import annotations

import numpy as np

from tasb_ray.config import is_int
from tasb_ray.errors import ConfigError
from tasb_ray.training.sampling.pair_strategies import margin_bins as query_margin_bins
from tasb_ray.training.sampling.sampler import BatchSampler


def _plan_indices(sampler: BatchSampler, num_batches: int) -> list[np.ndarray]:
    probe = sampler.fork()
    return [probe._next_indices()[0] for _ in range(num_batches)]


def margin_bins(sampler: BatchSampler) -> np.ndarray:
    """Per pair, its bin among ``config.bins`` equal-width bins of its query's margins (as ``bins`` draws them)."""
    return query_margin_bins(sampler.pair_margins(), sampler._pair_query, sampler.num_queries, sampler.config.bins)


def plan_statistics(sampler: BatchSampler, num_batches: int) -> dict:
    """The statistics of the module docstring for the next ``num_batches`` batches of ``sampler`` (not advanced).

    Plain Python numbers and lists (JSON-ready); cluster keys only when the sampler has clusters.
    """
    if not is_int(num_batches) or num_batches < 1:
        raise ConfigError(f"num_batches must be an integer >= 1, got {num_batches!r}")
    batches = _plan_indices(sampler, num_batches)
    rows = np.concatenate(batches)
    row_query = sampler._pair_query[rows]
    n_q = sampler.num_queries
    out: dict = {"batches": num_batches, "rows": len(rows), "queries": n_q, "pairs": sampler.num_pairs,
                 "sampling": sampler.config.sampling, "pair_strategy": sampler.config.effective_pair_strategy}

    clusters = sampler._query_cluster
    if clusters is not None:
        single, n_used, same, ordered = 0, [], 0, 0
        for idx in batches:
            c = clusters[sampler._pair_query[idx]]
            _, counts = np.unique(c, return_counts=True)
            n_used.append(len(counts))
            single += len(counts) == 1
            same += int((counts * (counts - 1)).sum())
            ordered += len(c) * (len(c) - 1)
        out["single_cluster_batch_share"] = single / num_batches
        out["clusters_per_batch_mean"] = float(np.mean(n_used))
        out["same_cluster_query_pair_share"] = same / ordered if ordered else None

    out["repeated_query_batch_share"] = float(np.mean(
        [len(np.unique(sampler._pair_query[idx])) < len(idx) for idx in batches]))
    out["queries_covered_share"] = len(np.unique(row_query)) / n_q
    per_epoch = sampler.batches_per_epoch
    epochs = [np.concatenate(batches[e:e + per_epoch]) for e in range(0, num_batches - per_epoch + 1, per_epoch)]
    if epochs:
        out["queries_covered_per_epoch"] = float(np.mean(
            [len(np.unique(sampler._pair_query[e])) / n_q for e in epochs]))
    out["pairs_per_query_mean"] = sampler.num_pairs / n_q
    out["samples_per_query_mean"] = len(rows) / len(np.unique(row_query))

    h = sampler.config.bins
    bins = margin_bins(sampler)
    nonempty = np.zeros((n_q, h), dtype=bool)
    nonempty[sampler._pair_query, bins] = True
    observed = np.bincount(bins[rows], minlength=h) / len(rows)
    samples = np.bincount(row_query, minlength=n_q).astype(np.float64)
    balanced = (samples / nonempty.sum(axis=1)) @ nonempty / len(rows)
    out["bin_hist"] = observed.tolist()
    out["bin_hist_balanced"] = balanced.tolist()
    out["bin_tv"] = float(0.5 * np.abs(observed - balanced).sum())
    return out


def plan_metrics(stats: dict) -> dict[str, float]:
    """The numeric statistics as flat metrics (``bin_hist`` becomes ``bin_hist_0`` ...), for the reporters."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, list):
            flat.update({f"{key}_{i}": float(v) for i, v in enumerate(value)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            flat[key] = float(value)
    return flat
