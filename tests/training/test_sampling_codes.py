"""The sampler on a row-coded pairs table (integer ids + id tables, as the teacher-file source makes at scale): the
same batches and plan hash as on the external string ids, and hashes pinned to the values before the change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tasb_ray.errors import ConfigError
from tasb_ray.training.sampling import BatchSampler, PairIds, SamplerConfig, build_plan, plan_hash
from tests.training.test_sampling import SIZES, make_data

# Computed with the sampler before it held integer codes (commit ac55d32): a plan's hash is a function of the
# external ids, so a change of internals must leave it alone.
PINNED = {"tas-balanced": "842fe30b4265abaaf78ac15a9112d52ddfdab932eae7ff707de89d547973ed1c",
          "random": "f645b5efc0b6612aaffa9da41f1ff6eaeb51c9222e4191b06fd390ddda15eea5"}


def coded(pairs: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, PairIds]:
    """``pairs`` with ids replaced by rows of shuffled id tables that also hold ids no pair uses."""
    rng = np.random.default_rng(seed)
    qtable = np.array(sorted(set(pairs["qid"])) + ["unused-q"], dtype=object)[rng.permutation(pairs["qid"].nunique() + 1)]
    ptable = np.array(sorted(set(pairs["pos_pid"]) | set(pairs["neg_pid"])) + ["unused-p"], dtype=object)
    ptable = ptable[rng.permutation(len(ptable))]
    qrow = {q: i for i, q in enumerate(qtable)}
    prow = {p: i for i, p in enumerate(ptable)}
    out = pairs.assign(qid=pairs["qid"].map(qrow).astype(np.int32), pos_pid=pairs["pos_pid"].map(prow).astype(np.int32),
                       neg_pid=pairs["neg_pid"].map(prow).astype(np.int32))
    return out, PairIds(pa.array(qtable, pa.string()), pa.array(ptable, pa.string()))


@pytest.mark.parametrize("sampling", ["tas-balanced", "random"])
def test_coded_pairs_give_the_same_batches_and_pinned_hash(sampling):
    pairs, clusters = make_data(SIZES)
    codes, ids = coded(pairs)
    plain = BatchSampler(pairs, SamplerConfig(sampling=sampling), clusters)
    rows = BatchSampler(codes, SamplerConfig(sampling=sampling), clusters, ids=ids)
    assert plan_hash(build_plan(rows, 40)) == plan_hash(build_plan(plain, 40)) == PINNED[sampling]
    for _ in range(2 * plain.batches_per_epoch):
        a, b = next(plain), next(rows)
        assert (a.qids, a.pos_pids, a.neg_pids, a.clusters, a.topped_up) == (b.qids, b.pos_pids, b.neg_pids,
                                                                             b.clusters, b.topped_up)
        assert a.pos_scores.tolist() == b.pos_scores.tolist() and a.query_rows is None
        # The rows point at the batch's ids in the id tables: what the trainer takes texts by.
        assert ids.queries.take(b.query_rows).to_pylist() == b.qids
        assert ids.passages.take(b.pos_rows).to_pylist() == b.pos_pids
        assert ids.passages.take(b.neg_rows).to_pylist() == b.neg_pids


def test_coded_plan_does_not_depend_on_id_table_order():
    pairs, clusters = make_data(SIZES)
    hashes = {plan_hash(build_plan(BatchSampler(c, SamplerConfig(), clusters, ids=i), 30))
              for c, i in (coded(pairs, seed) for seed in range(3))}
    assert len(hashes) == 1


# Every composition x pair strategy (bins=7, seed=5, 60 batches), computed before the sampler kept the pair columns as
# views in one (query, group) order (commit 5658907): the same plans from a DataFrame, an Arrow table or NumPy columns.
PINNED_ALL = {
    "random/bins": "5bdb1b56ca4c18f5510dcf9f47186b7aa1cd25b3aeba8fe1bc03c3dc3a1414ee",
    "random/hard-margin": "e39da6bb1e5064b0c554d700fa9c766278424775a03e57131baf7459abc4592b",
    "random/random": "8bc63656744d1a83eb01d9e396ee0a858dfb70df4768a6dc26424580493d3ec4",
    "tas-authors/bins": "70d06c8ff85c2d73e8a16c71ce280d26f9e19805027260fba0000d4315b7b2d2",
    "tas-authors/hard-margin": "190420c40b7df366bca7080415ed35e2baead6c8a83bfb3d835b7fcabae49a86",
    "tas-authors/random": "acf1a020867e9f417200b5f848d4aa356c34f6c74a787c5fd6fb82215ede4e1e",
    "tas-balanced/bins": "85a849af09aae359913d64af781cb93b9ef0bfbd66b5700b95db5bd1375a5a38",
    "tas-balanced/hard-margin": "b026a8a9b71776def3e0e38bc2760757c6d77d0c352412cbc66b876dc0da920d",
    "tas-balanced/random": "0e8d8af510143b8731d979ec34d9f0a3382274d86eb2d8d31e965f0fe41f606c",
}


@pytest.mark.parametrize("key", sorted(PINNED_ALL))
def test_every_composition_and_pair_strategy_keeps_its_pinned_plan_from_any_column_container(key):
    sampling, strategy = key.split("/")
    cfg = SamplerConfig(sampling=sampling, pair_strategy=strategy, bins=7, seed=5,
                        margin_cutoff=3.0 if strategy == "hard-margin" else None)
    pairs, clusters = make_data(SIZES)
    codes, ids = coded(pairs)
    inputs = [(pairs, None), (codes, ids), (pa.Table.from_pandas(codes, preserve_index=False), ids),
              ({c: codes[c].to_numpy() for c in codes.columns}, ids)]
    hashes = [plan_hash(build_plan(BatchSampler(p, cfg, clusters, ids=i), 60)) for p, i in inputs]
    assert hashes == [PINNED_ALL[key]] * len(inputs)


def test_row_coded_pairs_keep_their_columns_uncopied():
    pairs, clusters = make_data(SIZES)
    codes, ids = coded(pairs)
    table = pa.Table.from_pandas(codes, preserve_index=False)
    s = BatchSampler(table, SamplerConfig(), clusters, ids=ids)
    for col, mine in (("pos_pid", s._pos_code), ("neg_pid", s._neg_code), ("pos_score", s._pos_score)):
        assert mine.dtype == table[col].type.to_pandas_dtype() and not mine.flags.owndata  # a view of the table
    assert s._order.dtype == np.int32 and s._pair_query.dtype == np.int32


@pytest.mark.parametrize("change, message", [
    (lambda c: c.assign(pos_pid=c["pos_pid"] + 1000), "'pos_pid' holds row"),
    (lambda c: c.assign(qid=-1), "'qid' holds row -1"),
    (lambda c: c.assign(neg_pid=c["neg_pid"].astype(str)), "'neg_pid' must hold integer rows"),
    (lambda c: c.drop(columns="pos_score"), "lacks columns ['pos_score']"),
    (lambda c: c.iloc[:0], "empty"),
])
def test_bad_row_coded_pairs_name_the_column(change, message):
    pairs, clusters = make_data(SIZES)
    codes, ids = coded(pairs)
    with pytest.raises(ConfigError) as e:
        BatchSampler(change(codes), SamplerConfig(), clusters, ids=ids)
    assert message in str(e.value)
