"""A weighted ensemble of teachers, each z-normalised per query before the weighted sum.

Teachers score on unrelated scales (BM25 in the tens, cosine in [-1, 1], cross-encoder logits), so
they are put on one scale first: per query, each teacher's scores of that query's candidates get
mean 0 and standard deviation 1 (population sd, ddof=0; a constant set of scores, including a single
candidate, becomes all 0). The TAS-B paper ensembles BERT-CAT and ColBERT teachers by summing their
scores; per-query normalisation is the scale-free version of that sum.

Contract: normalisation is over the rows of a query *in the given batch*, so callers must put all
candidates of a query in one batch (the pipelines group by ``qid``); then the result does not depend
on how the data was batched. In :meth:`EnsembleTeacher.score_matrix` each row (query) is normalised
over the given passages.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
    Sampling", SIGIR 2021 (the BERT-CAT + ColBERT teacher ensemble).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import ConfigError
from tasb_ray.teachers.base import Teacher


def znorm_by_group(scores: np.ndarray, groups: Sequence) -> np.ndarray:
    """Per-group z-scores (population sd); groups with sd 0 become 0."""
    x = np.asarray(scores, dtype=np.float64)
    codes, _ = pd.factorize(pd.Series(list(groups), dtype=object), sort=False)
    counts = np.bincount(codes)
    mean = (np.bincount(codes, weights=x) / counts)[codes]
    centred = x - mean
    sd = np.sqrt(np.bincount(codes, weights=centred * centred) / counts)[codes]
    # Relative threshold: float noise on a constant group must not be blown up to +-1.
    tiny = 1e-12 * np.maximum(np.abs(mean), 1.0)
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > tiny)


def znorm_rows(matrix: np.ndarray) -> np.ndarray:
    """Row-wise z-scores (population sd); rows with sd 0 become 0."""
    m = np.asarray(matrix, dtype=np.float64)
    centred = m - m.mean(axis=1, keepdims=True)
    sd = m.std(axis=1, keepdims=True)
    tiny = 1e-12 * np.maximum(np.abs(m.mean(axis=1, keepdims=True)), 1.0)
    return np.divide(centred, np.broadcast_to(sd, m.shape), out=np.zeros_like(centred),
                     where=np.broadcast_to(sd > tiny, m.shape))


class EnsembleTeacher(Teacher):
    """``score = Σ_k w_k · z_q(teacher_k)``, with ``z_q`` the per-query z-normalisation.

    Args:
        components: the member teachers.
        weights: one weight per member (default all 1).
    """

    name = "ensemble"

    def __init__(self, components: Sequence[Teacher], weights: Sequence[float] | None = None):
        if not components:
            raise ConfigError("ensemble needs at least one component teacher")
        weights = [1.0] * len(components) if weights is None else [float(w) for w in weights]
        if len(weights) != len(components):
            raise ConfigError(f"ensemble: {len(weights)} weights for {len(components)} teachers")
        self.components = list(components)
        self.weights = weights
        self.required_columns = tuple(dict.fromkeys(["qid"] + [c for t in self.components
                                                               for c in t.required_columns]))

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        qids = batch["qid"].astype(str).tolist()
        total = np.zeros(len(batch), dtype=np.float64)
        for teacher, w in zip(self.components, self.weights):
            total += w * znorm_by_group(teacher.score_batch(batch), qids)
        return total

    def precompute(self, ids, texts, kind) -> None:
        for teacher in self.components:
            teacher.precompute(ids, texts, kind)

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        total = np.zeros((len(queries), len(passages)), dtype=np.float64)
        for teacher, w in zip(self.components, self.weights):
            total += w * znorm_rows(teacher.score_matrix(qids, queries, pids, passages))
        return total
