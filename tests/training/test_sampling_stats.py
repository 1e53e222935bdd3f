"""Plan statistics and the authors' composition (``tas-authors``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import ConfigError
from tasb_ray.training.sampling import BatchSampler, SamplerConfig, build_plan, plan_hash, plan_metrics, plan_statistics
from tasb_ray.training.sampling.stats import margin_bins
from tests.training.test_sampling import SIZES, epoch_batches, make_data


@pytest.fixture(scope="module")
def data():
    return make_data(SIZES)


def test_hand_example_two_clusters():
    # Four queries, clusters {q0, q1} and {q2, q3}, batches of 2: tas batches are one cluster each.
    pairs = pd.DataFrame({"qid": ["q0", "q1", "q2", "q3"], "pos_pid": ["a", "b", "c", "d"],
                          "neg_pid": ["e", "f", "g", "h"], "pos_score": 1.0, "neg_score": 0.0})
    clusters = pd.DataFrame({"qid": ["q0", "q1", "q2", "q3"], "cluster": [0, 0, 1, 1]})
    tas = plan_statistics(BatchSampler(pairs, SamplerConfig(sampling="tas", batch_size=2), clusters), 4)
    assert tas["single_cluster_batch_share"] == 1.0 and tas["clusters_per_batch_mean"] == 1.0
    assert tas["same_cluster_query_pair_share"] == 1.0
    assert tas["queries_covered_share"] == 1.0 and tas["queries_covered_per_epoch"] == 1.0
    assert tas["pairs_per_query_mean"] == 1.0 and tas["samples_per_query_mean"] == 2.0
    assert tas["repeated_query_batch_share"] == 0.0
    # One pair per query: everything in bin 0, which is also what balanced sampling would give.
    assert tas["bin_hist"][0] == 1.0 and tas["bin_tv"] == 0.0

    rnd = BatchSampler(pairs, SamplerConfig(sampling="random", batch_size=2, seed=3), clusters)
    stats = plan_statistics(rnd, 40)
    # A random batch of 2 of these 4 queries is one cluster with probability 1/3.
    batches = [set(next(rnd).clusters) for _ in range(40)]
    assert stats["single_cluster_batch_share"] == np.mean([len(b) == 1 for b in batches])
    assert 0.1 < stats["single_cluster_batch_share"] < 0.6
    assert stats["same_cluster_query_pair_share"] == stats["single_cluster_batch_share"]


def test_composition_statistics_order_the_compositions(data):
    pairs, clusters = data
    stats = {s: plan_statistics(BatchSampler(pairs, SamplerConfig(sampling=s, batch_size=16, seed=1), clusters), 200)
             for s in ("random", "tas-balanced", "tas-authors")}
    assert stats["random"]["single_cluster_batch_share"] < 0.05
    assert stats["tas-balanced"]["single_cluster_batch_share"] > 0.6
    assert stats["random"]["clusters_per_batch_mean"] > stats["tas-balanced"]["clusters_per_batch_mean"]
    for s in ("random", "tas-balanced"):
        assert stats[s]["queries_covered_per_epoch"] == 1.0 and stats[s]["repeated_query_batch_share"] == 0.0
    authors = stats["tas-authors"]
    # Uniform cluster draws: single-cluster exactly when the drawn cluster holds a whole batch.
    big = np.mean(np.asarray(SIZES) >= 16)
    assert abs(authors["single_cluster_batch_share"] - big) < 0.1
    assert authors["queries_covered_per_epoch"] < 0.9  # with replacement: some queries unseen in an epoch


def test_bin_histogram_and_tv_tell_bins_from_random_pairs():
    # Each query: one pair with a high margin, nine with low ones, so random pairs sit in the bottom bin.
    rows = []
    for q in range(40):
        rows.append((f"q{q}", "top", "n", 10.0, 0.0))
        rows += [(f"q{q}", f"p{k}", f"n{k}", 0.1 * k, 0.0) for k in range(9)]
    pairs = pd.DataFrame(rows, columns=["qid", "pos_pid", "neg_pid", "pos_score", "neg_score"])
    bins = plan_statistics(BatchSampler(pairs, SamplerConfig(sampling="random", pair_strategy="bins", batch_size=8)),
                           400)
    rnd = plan_statistics(BatchSampler(pairs, SamplerConfig(sampling="random", batch_size=8)), 400)
    # Non-empty bins per query: 0 (the nine low margins) and 9 (the top pair), so balanced = half each.
    assert bins["bin_hist_balanced"][0] == pytest.approx(0.5) and bins["bin_hist_balanced"][9] == pytest.approx(0.5)
    assert bins["bin_tv"] < 0.05
    assert rnd["bin_hist"][0] == pytest.approx(0.9, abs=0.05) and rnd["bin_tv"] == pytest.approx(0.4, abs=0.05)


def test_margin_bins_are_each_querys_histogram_bins_and_the_draw_groups(data):
    pairs, clusters = data
    sampler = BatchSampler(pairs, SamplerConfig(sampling="tas-balanced", batch_size=16), clusters)
    h = sampler.config.bins
    bins, m, q = margin_bins(sampler), sampler.pair_margins(), sampler._pair_query
    for j in range(sampler.num_queries):
        mj = m[q == j]
        edges = np.linspace(mj.min(), mj.max(), h + 1)  # numpy.histogram's bins: [e_i, e_i+1), the last closed
        expected = np.zeros(len(mj)) if mj.min() == mj.max() else \
            np.clip(np.searchsorted(edges, mj, side="right") - 1, 0, h - 1)
        np.testing.assert_array_equal(bins[q == j], expected)
    # The balanced strategy draws a group, then a pair in it: every group is the pairs of one non-empty bin.
    groups = [bins[a:a + n] for a, n in zip(sampler._group_start, sampler._group_size)]
    assert all(len(set(g)) == 1 for g in groups)
    assert sum(len(g) for g in groups) == sampler.num_pairs
    assert len(groups) == len(set(zip(q.tolist(), bins.tolist())))


def test_plan_metrics_flatten_lists_and_drop_text(data):
    pairs, clusters = data
    stats = plan_statistics(BatchSampler(pairs, SamplerConfig(batch_size=16), clusters), 10)
    m = plan_metrics(stats)
    assert m["bin_hist_0"] == stats["bin_hist"][0] and "sampling" not in m and "bin_hist" not in m
    assert all(isinstance(v, float) for v in m.values())
    with pytest.raises(ConfigError, match="num_batches"):
        plan_statistics(BatchSampler(pairs, SamplerConfig(batch_size=16), clusters), 0)


def test_tas_authors_is_deterministic_resumable_and_full(data):
    pairs, clusters = data
    cfg = SamplerConfig(sampling="tas-authors", batch_size=16, seed=5)
    assert cfg.effective_pair_strategy == "bins"
    a, b = BatchSampler(pairs, cfg, clusters), BatchSampler(pairs, cfg, clusters)
    n = 3 * a.batches_per_epoch
    assert plan_hash(build_plan(a, n)) == plan_hash(build_plan(b, n))
    other = BatchSampler(pairs, SamplerConfig(sampling="tas-authors", batch_size=16, seed=6), clusters)
    assert plan_hash(build_plan(a, n)) != plan_hash(build_plan(other, n))
    batches = epoch_batches(a)
    assert all(len(x) == 16 for x in batches)  # every batch full, the last one too
    # Single-cluster exactly when not topped up; a topped-up batch starts with a cluster smaller than the batch.
    sizes = clusters.groupby("cluster").size()
    for x in batches:
        assert (len(x.used_clusters) > 1) == x.topped_up
        if x.topped_up:
            assert sizes[x.clusters[0]] < 16
    state = a.state_dict()
    rest = [next(a) for _ in range(5)]
    c = BatchSampler(pairs, cfg, clusters)
    c.load_state_dict(state)
    assert [x.qids for x in rest] == [next(c).qids for _ in range(5)]


def test_tas_authors_needs_clusters(data):
    pairs, _ = data
    with pytest.raises(ConfigError, match="cluster"):
        BatchSampler(pairs, SamplerConfig(sampling="tas-authors", batch_size=16))
