"""Carving a dev split from train, deterministically and by query."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasb_ray.schema import QUERY_ID


def carve_dev(train: pd.DataFrame, fraction: float, seed: int,
              exclude: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split train qrels into (train, dev) by query.

    The same (queries, fraction, seed) always yields the same dev set: query ids are sorted before
    the seeded permutation, so file order does not matter. Queries in ``exclude`` (test) are dropped
    from both sides so dev can never overlap test.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {fraction}")
    train = train[~train[QUERY_ID].isin(exclude)]
    qids = np.array(sorted(train[QUERY_ID].unique()))
    if len(qids) < 2:
        raise ValueError("cannot carve a dev split from fewer than 2 training queries")
    n_dev = min(len(qids) - 1, max(1, round(fraction * len(qids))))
    perm = np.random.default_rng(seed).permutation(len(qids))
    dev_ids = set(qids[perm[:n_dev]])
    is_dev = train[QUERY_ID].isin(dev_ids)
    return train[~is_dev].reset_index(drop=True), train[is_dev].reset_index(drop=True)
