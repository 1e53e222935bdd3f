"""The sampler on a row-coded pairs table (integer ids + id tables, as the teacher-file source makes at scale): the
same batches and plan hash as on the external string ids, and hashes pinned to the values before the change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

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
