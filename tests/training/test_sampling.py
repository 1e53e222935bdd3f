from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chisquare

from tasb_ray.errors import ConfigError
from tasb_ray.training.sampling import (
    Batch,
    BatchSampler,
    SamplerConfig,
    build_plan,
    plan_hash,
    read_plan,
    write_plan,
)
from tasb_ray.training.sampling.pair_strategies import _histogram_bins


def make_data(cluster_sizes: list[int], seed: int = 0, max_pairs: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, assign = [], []
    n = 0
    for c, size in enumerate(cluster_sizes):
        for _ in range(size):
            qid = f"q{n}"
            assign.append((qid, c * 7))  # non-contiguous cluster ids
            for k in range(int(rng.integers(1, max_pairs + 1))):
                rows.append((qid, f"{qid}_p{k}", f"{qid}_n{k}", float(rng.normal(5, 2)), float(rng.normal(0, 2))))
            n += 1
    pairs = pd.DataFrame(rows, columns=["qid", "pos_pid", "neg_pid", "pos_score", "neg_score"])
    return pairs, pd.DataFrame(assign, columns=["qid", "cluster"])


# Mixed sizes: several clusters smaller than a batch, so TAS must top up.
SIZES = [5, 12, 40, 70, 33, 8, 64, 21, 3, 90, 31, 47]


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_data(SIZES)


def epoch_batches(sampler: BatchSampler) -> list[Batch]:
    return [next(sampler) for _ in range(sampler.batches_per_epoch)]


def single_query_sampler(margins: list[float], **cfg) -> BatchSampler:
    pairs = pd.DataFrame({"qid": "q", "pos_pid": [f"p{i}" for i in range(len(margins))],
                          "neg_pid": [f"n{i}" for i in range(len(margins))],
                          "pos_score": np.asarray(margins, dtype=float), "neg_score": 0.0})
    return BatchSampler(pairs, SamplerConfig(sampling="random", batch_size=1, **cfg))


def draw_single(sampler: BatchSampler, n: int) -> np.ndarray:
    """Pair index (from 'p<i>') of n draws for the sampler's only query: one batch per epoch."""
    return np.array([int(next(sampler).pos_pids[0][1:]) for _ in range(n)])


# -- query composition ---------------------------------------------------------------------------------------------

def test_tas_batch_is_one_cluster_unless_topped_up(data):
    pairs, clusters = data
    s = BatchSampler(pairs, SamplerConfig(sampling="tas", batch_size=16, seed=3), clusters)
    batches = [b for _ in range(3) for b in epoch_batches(s)]
    plain = [b for b in batches if not b.topped_up]
    topped = [b for b in batches if b.topped_up]
    assert plain and topped  # the data must exercise both cases for this test to mean anything
    assert all(len(set(b.clusters)) == 1 for b in plain)
    assert all(len(set(b.clusters)) > 1 for b in topped)


@pytest.mark.parametrize("sampling", ["tas", "tas-balanced"])
def test_top_up_only_when_cluster_runs_short(data, sampling):
    pairs, clusters = data
    size = dict(Counter(clusters["cluster"]))
    bs = 16
    s = BatchSampler(pairs, SamplerConfig(sampling=sampling, batch_size=bs, seed=1), clusters)
    for _ in range(3):
        used: Counter[int] = Counter()
        batches = epoch_batches(s)
        for i, b in enumerate(batches):
            used.update(b.clusters)
            order = b.used_clusters
            # Every cluster but the last one a batch drew from must be exhausted by it: a batch only moves on
            # to another cluster when the current one has no unused queries left this epoch.
            for c in order[:-1]:
                assert used[c] == size[c]
            assert b.topped_up == (len(order) > 1)
            if i < len(batches) - 1:
                assert len(b) == bs  # only the epoch's last batch may be short ("keep" policy)
        assert used == Counter(size)


@pytest.mark.parametrize("sampling", ["random", "tas", "tas-balanced"])
def test_every_query_once_per_epoch_and_never_twice_in_a_batch(data, sampling):
    pairs, clusters = data
    s = BatchSampler(pairs, SamplerConfig(sampling=sampling, batch_size=32, seed=5), clusters)
    all_qids = sorted(pairs["qid"].unique())
    for _ in range(2):
        batches = epoch_batches(s)
        for b in batches:
            assert len(set(b.qids)) == len(b.qids)
        assert sorted(q for b in batches for q in b.qids) == all_qids
    assert s.epoch == 1 and s.batch_in_epoch == s.batches_per_epoch


def test_random_composition_spreads_over_clusters_tas_does_not():
    pairs, clusters = make_data([50] * 20, max_pairs=2)
    distinct = {}
    for sampling in ("random", "tas"):
        s = BatchSampler(pairs, SamplerConfig(sampling=sampling, batch_size=32, seed=0), clusters)
        batches = epoch_batches(s)
        distinct[sampling] = np.mean([len(set(b.clusters)) for b in batches])
        if sampling == "tas":
            assert all(len(set(b.clusters)) == 1 for b in batches if not b.topped_up)
    assert distinct["random"] > 12  # expected ~16 distinct of 20 for 32 draws
    assert distinct["tas"] < 1.6


def test_batch_carries_the_chosen_pair(data):
    pairs, clusters = data
    s = BatchSampler(pairs, SamplerConfig(seed=2), clusters)
    lookup = pairs.set_index(["qid", "pos_pid", "neg_pid"])
    b = next(s)
    for q, p, n, ps, ns in zip(b.qids, b.pos_pids, b.neg_pids, b.pos_scores, b.neg_scores):
        row = lookup.loc[(q, p, n)]
        assert (row["pos_score"], row["neg_score"]) == (ps, ns)
    cluster_of = dict(zip(clusters["qid"], clusters["cluster"]))
    assert b.clusters == [cluster_of[q] for q in b.qids]


# -- pair choice ---------------------------------------------------------------------------------------------------

# One pair in bin 0, 5 in bin 4, 50 in bin 9; bins 1-3 and 5-8 empty (margins span [0, 10], bin width 1).
UNEVEN = [0.0] + [4.5] * 5 + list(np.linspace(9.05, 10.0, 50))
UNEVEN_BIN = np.array([0] + [1] * 5 + [2] * 50)  # index into the three non-empty bins


def test_bins_is_uniform_over_nonempty_bins():
    n = 12_000
    drawn = draw_single(single_query_sampler(UNEVEN, pair_strategy="bins", bins=10), n)
    counts = np.bincount(UNEVEN_BIN[drawn], minlength=3)
    assert chisquare(counts).pvalue > 0.001
    # Within the crowded bin, pairs are uniform too.
    crowded = np.bincount(drawn[UNEVEN_BIN[drawn] == 2] - 6, minlength=50)
    assert chisquare(crowded).pvalue > 0.001


def test_bin_uniformity_check_has_power_against_per_pair_uniform():
    drawn = draw_single(single_query_sampler(UNEVEN, pair_strategy="random"), 12_000)
    counts = np.bincount(UNEVEN_BIN[drawn], minlength=3)
    assert chisquare(counts).pvalue < 0.001


def test_histogram_bins_match_numpy_histogram():
    rng = np.random.default_rng(0)
    for h in (1, 3, 10):
        for _ in range(50):
            x = np.round(rng.normal(size=int(rng.integers(2, 40))), 1)  # rounding puts values on bin edges
            lo, hi = np.full_like(x, x.min()), np.full_like(x, x.max())
            if x.min() == x.max():
                continue
            ours = np.bincount(_histogram_bins(x, lo, hi, h), minlength=h)
            assert ours.tolist() == np.histogram(x, bins=h)[0].tolist()


def test_equal_margins_use_one_bin_and_stay_uniform():
    n_pairs, n = 7, 7_000
    drawn = draw_single(single_query_sampler([2.5] * n_pairs, pair_strategy="bins"), n)
    assert chisquare(np.bincount(drawn, minlength=n_pairs)).pvalue > 0.001
    assert set(draw_single(single_query_sampler([1.0], pair_strategy="bins"), 20)) == {0}


def test_hard_margin_only_draws_pairs_under_cutoff():
    margins = [0.5, 1.0, 2.0, 5.0, 8.0, 2.9999]
    drawn = set(draw_single(single_query_sampler(margins, pair_strategy="hard-margin", margin_cutoff=3.0), 600))
    assert drawn == {0, 1, 2, 5}


def test_hard_margin_falls_back_to_smallest_margin():
    margins = [6.0, 4.0, 9.0, 4.0]
    drawn = set(draw_single(single_query_sampler(margins, pair_strategy="hard-margin", margin_cutoff=3.0), 200))
    assert drawn == {1, 3}


# -- determinism, plans, checkpoints -------------------------------------------------------------------------------

def test_same_seed_same_plan_different_seed_different_plan(data):
    pairs, clusters = data

    def h(seed: int, **kw) -> str:
        return plan_hash(build_plan(BatchSampler(pairs, SamplerConfig(seed=seed, **kw), clusters), 40))

    assert h(0) == h(0)
    assert h(0) != h(1)
    assert h(0) != h(0, sampling="tas")
    # The plan does not depend on the order of queries in the input table (pairs keep their order per query).
    reordered = pairs.sort_values("qid", key=lambda q: q.str[::-1], kind="stable")
    assert reordered["qid"].tolist() != pairs["qid"].tolist()
    assert plan_hash(build_plan(BatchSampler(reordered, SamplerConfig(), clusters), 40)) == h(0)
    # ... but it does depend on the pairs' order within a query, since it draws pair positions.
    flipped = pairs.iloc[::-1]
    assert plan_hash(build_plan(BatchSampler(flipped, SamplerConfig(), clusters), 40)) != h(0)


def test_plan_matches_batches_and_does_not_advance_sampler(data):
    pairs, clusters = data
    s = BatchSampler(pairs, SamplerConfig(batch_size=16), clusters)
    plan = build_plan(s, 30)
    assert list(plan.columns) == ["batch", "qid", "pos_pid", "neg_pid"]
    assert (s.epoch, s.batch_in_epoch) == (0, 0)
    for i in range(30):
        b = next(s)
        rows = plan[plan["batch"] == i]
        assert rows["qid"].tolist() == b.qids
        assert rows["pos_pid"].tolist() == b.pos_pids
        assert rows["neg_pid"].tolist() == b.neg_pids


def test_plan_roundtrip_keeps_hash(data, tmp_path):
    pairs, clusters = data
    plan = build_plan(BatchSampler(pairs, SamplerConfig(), clusters), 25)
    path = tmp_path / "plan" / "plan.parquet"
    write_plan(plan, path)
    back = read_plan(path)
    assert plan_hash(back) == plan_hash(plan)
    pd.testing.assert_frame_equal(back, plan)
    assert plan_hash(plan.iloc[::-1]) != plan_hash(plan)  # order matters


def batch_key(b: Batch) -> tuple:
    return (b.qids, b.pos_pids, b.neg_pids, b.pos_scores.tolist(), b.neg_scores.tolist(), b.clusters, b.topped_up)


@pytest.mark.parametrize("sampling", ["random", "tas-balanced"])
def test_resume_from_state_continues_the_same_sequence(data, sampling):
    pairs, clusters = data
    cfg = SamplerConfig(sampling=sampling, batch_size=16, seed=9)
    ref = BatchSampler(pairs, cfg, clusters)
    per_epoch = ref.batches_per_epoch
    total = 2 * per_epoch + 5
    expected = [batch_key(next(ref)) for _ in range(total)]
    # Cut mid-epoch, exactly at an epoch's end, and so that the resumed part crosses epoch boundaries.
    for n in (3, per_epoch - 2, per_epoch, per_epoch + 1):
        first = BatchSampler(pairs, cfg, clusters)
        got = [batch_key(next(first)) for _ in range(n)]
        state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as JSON
        resumed = BatchSampler(pairs, cfg, clusters)
        resumed.load_state_dict(state)
        got += [batch_key(next(resumed)) for _ in range(total - n)]
        assert got == expected, n


def test_load_state_rejects_other_setup(data):
    pairs, clusters = data
    state = BatchSampler(pairs, SamplerConfig(seed=1), clusters).state_dict()
    with pytest.raises(ConfigError, match="seed"):
        BatchSampler(pairs, SamplerConfig(seed=2), clusters).load_state_dict(state)
    with pytest.raises(ConfigError, match="num_pairs"):
        BatchSampler(pairs.iloc[:-1], SamplerConfig(seed=1), clusters).load_state_dict(state)


# -- configuration -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sampling,pair,expected", [
    ("tas-balanced", None, "bins"), ("tas", None, "random"), ("random", None, "random"), ("random", "bins", "bins"),
])
def test_pair_strategy_defaults(sampling, pair, expected):
    assert SamplerConfig(sampling=sampling, pair_strategy=pair).effective_pair_strategy == expected


@pytest.mark.parametrize("kwargs,field", [
    ({"sampling": "balanced"}, "sampling"),
    ({"pair_strategy": "hardest"}, "pair_strategy"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.5}, "batch_size"),
    ({"batch_size": True}, "batch_size"),
    ({"bins": 0}, "bins"),
    ({"seed": -1}, "seed"),
    ({"seed": "1"}, "seed"),
    ({"pair_strategy": "hard-margin"}, "margin_cutoff"),
    ({"pair_strategy": "hard-margin", "margin_cutoff": float("nan")}, "margin_cutoff"),
    ({"pair_strategy": "bins", "margin_cutoff": 2.0}, "margin_cutoff"),
])
def test_bad_config_names_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SamplerConfig(**kwargs)


def test_tas_needs_cluster_for_every_query(data):
    pairs, clusters = data
    with pytest.raises(ConfigError, match="clusters"):
        BatchSampler(pairs, SamplerConfig(sampling="tas"), None)
    with pytest.raises(ConfigError, match="3 of"):
        BatchSampler(pairs, SamplerConfig(sampling="tas"), clusters.iloc[3:])
    # Cluster entries for queries without pairs are ignored; a Series and a dict work as well.
    extra = pd.concat([clusters, pd.DataFrame({"qid": ["unused"], "cluster": [1]})])
    series = clusters.set_index("qid")["cluster"]
    plans = {plan_hash(build_plan(BatchSampler(pairs, SamplerConfig(), c), 10))
             for c in (clusters, extra, series, series.to_dict())}
    assert len(plans) == 1


def test_pairs_table_is_checked():
    with pytest.raises(ConfigError, match="neg_score"):
        BatchSampler(pd.DataFrame({"qid": ["q"], "pos_pid": ["p"], "neg_pid": ["n"], "pos_score": [1.0]}),
                     SamplerConfig(sampling="random"))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_teacher_scores_are_refused(bad):
    with pytest.raises(ConfigError, match="pairs: 1 rows have a non-finite pos_score or neg_score"):
        single_query_sampler([1.0, bad, 2.0])
