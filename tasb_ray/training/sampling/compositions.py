"""Query compositions: which training queries form each batch of an epoch.

A composition draws a whole epoch at once: ``draw(rng) -> (queries, offsets, topped_up)``, the query indices in
batch order, batch ``b`` being ``queries[offsets[b]:offsets[b + 1]]``, and per batch whether it had to take queries
from more than one cluster. Every batch is full except an epoch's last one.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware Sampling",
    SIGIR 2021, section 3.1 (topic aware sampling).
"""

from __future__ import annotations

import numpy as np

from tasb_ray.training.sampling.config import Composition, SamplerConfig


class RandomComposition:
    """``random``: every training query once per epoch, in a random order."""

    name = Composition.RANDOM
    uses_clusters = False

    def __init__(self, config: SamplerConfig, num_queries: int, cluster_code: np.ndarray | None = None):
        self.config = config
        self.num_queries = num_queries

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        queries = rng.permutation(self.num_queries)
        offsets = np.append(np.arange(0, self.num_queries, self.config.batch_size), self.num_queries)
        return queries, offsets, np.zeros(len(offsets) - 1, dtype=bool)


class ClusterComposition(RandomComposition):
    """``tas`` / ``tas-balanced``: each batch takes ``batch_size`` unused queries of one random cluster.

    Only when that cluster runs out of unused queries this epoch does the batch top up from further random clusters.
    Deviation from the authors' loader: their cluster draw is with replacement and has no epochs; here a cluster is
    drawn among those with queries left this epoch, without replacement, so every query is used once per epoch.
    """

    name = Composition.TAS
    uses_clusters = True

    def __init__(self, config: SamplerConfig, num_queries: int, cluster_code: np.ndarray | None = None):
        super().__init__(config, num_queries)
        assert cluster_code is not None
        self._cluster_code = cluster_code
        self._cluster_size = np.bincount(cluster_code)
        self._cluster_start = np.concatenate(([0], np.cumsum(self._cluster_size)[:-1]))

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


class AuthorsClusterComposition(ClusterComposition):
    """``tas-authors``: the authors' loader. Each batch draws a cluster uniformly, with replacement, among all
    clusters, and takes ``batch_size`` distinct queries of it at random; a cluster smaller than the batch is
    topped up from further clusters drawn the same way (possibly the same one again, so a query can repeat
    within a batch). Nothing is remembered between batches: some queries are seen several times an epoch, others
    not at all.

    Deviations from the authors' code: an "epoch" here is just ``batches_per_epoch`` full batches drawn from the
    epoch's RNG, so steps, checkpoints and resumes work as for the other compositions; the draws use NumPy's
    generator, not Python's ``random``.
    """

    name = Composition.TAS_AUTHORS

    def __init__(self, config: SamplerConfig, num_queries: int, cluster_code: np.ndarray | None = None):
        super().__init__(config, num_queries, cluster_code)
        # Query indices grouped by cluster, in the layout _cluster_start / _cluster_size index.
        self._members = np.argsort(self._cluster_code, kind="stable")

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        bs = self.config.batch_size
        n_batches = -(-self.num_queries // bs)
        n_clusters = len(self._cluster_size)
        parts: list[np.ndarray] = []
        topped: list[bool] = []
        for _ in range(n_batches):
            need, drawn = bs, set()
            while need:
                c = int(rng.integers(n_clusters))
                take = min(need, int(self._cluster_size[c]))
                pick = rng.choice(int(self._cluster_size[c]), take, replace=False)
                parts.append(self._members[self._cluster_start[c] + pick])
                need -= take
                drawn.add(c)
            # Drawing a small cluster twice repeats queries but keeps the batch on one topic: not a top-up.
            topped.append(len(drawn) > 1)
        return np.concatenate(parts), np.arange(0, n_batches * bs + 1, bs), np.asarray(topped, dtype=bool)


COMPOSITION_CLASSES = {Composition.RANDOM.value: RandomComposition, Composition.TAS.value: ClusterComposition,
                       Composition.TAS_BALANCED.value: ClusterComposition,
                       Composition.TAS_AUTHORS.value: AuthorsClusterComposition}


def composition(config: SamplerConfig, num_queries: int, cluster_code: np.ndarray | None) -> RandomComposition:
    """The composition object ``config.sampling`` names."""
    return COMPOSITION_CLASSES[config.sampling](config, num_queries, cluster_code)
