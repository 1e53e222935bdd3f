"""The teacher interface: score (query, passage) pairs, or every query against every passage.

A teacher is what Margin-MSE distillation learns from: its scores of (query, positive, negative)
triples give the margins the student regresses, and its query × passage matrix is the in-batch
teacher signal of TAS-Balanced.

References:
    Hofstätter et al., "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
    Distillation", arXiv 2010.02666 (Margin-MSE).
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
    Sampling", SIGIR 2021, arXiv 2104.06967 (the in-batch teacher scores).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import TasbRayError

PAIR_COLUMNS = ("qid", "pid", "query", "passage")
SCORE_COLUMN = "score"


class Teacher(ABC):
    """Scores pairs; higher means more relevant.

    Subclasses set :attr:`name` and :attr:`required_columns` (the batch columns they read) and
    implement :meth:`score_batch`. Instances are also Ray Data batch callables: ``__call__`` takes a
    pandas batch and returns it with a ``score`` column, so a teacher class (or
    :class:`tasb_ray.teachers.factory.TeacherActor`) can run on an actor pool via ``map_batches``.
    """

    name: str = "teacher"
    required_columns: tuple[str, ...] = PAIR_COLUMNS

    @abstractmethod
    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        """Scores of each row of ``batch`` (columns ``qid, pid, query, passage``), shape ``[len(batch)]``."""

    def score_matrix(self, qids: Sequence[str], queries: Sequence[str], pids: Sequence[str],
                     passages: Sequence[str]) -> np.ndarray:
        """``[len(queries), len(passages)]`` scores of every query with every passage.

        The default scores the cross product through :meth:`score_batch` (row-major: all passages of
        query 0, then of query 1, ...); subclasses override it where encoding each side once is cheaper.

        Args:
            qids, queries: query ids and texts, aligned.
            pids, passages: passage ids and texts, aligned.
        """
        _check_aligned(qids, queries, "qids", "queries")
        _check_aligned(pids, passages, "pids", "passages")
        frame = cross_product_frame(qids, queries, pids, passages)
        if frame.empty:
            return np.zeros((len(queries), len(passages)), dtype=np.float32)
        return np.asarray(self.score_batch(frame)).reshape(len(queries), len(passages))

    def precompute(self, ids: Sequence[str], texts: Sequence[str], kind: str) -> None:
        """Warm any per-text cache for ``kind`` ('query' or 'passage'); teachers without one ignore it."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Ray Data protocol: the batch (same rows, same order) with a ``score`` column added."""
        out = batch.copy()
        out[SCORE_COLUMN] = self.score_batch(batch) if len(batch) else np.zeros(0, dtype=np.float32)
        return out

    def check_batch(self, batch: pd.DataFrame) -> None:
        """Raise naming the columns this teacher needs and the batch lacks."""
        missing = [c for c in self.required_columns if c not in batch.columns]
        if missing:
            raise TasbRayError(f"{self.name} teacher: batch lacks column(s) {missing} "
                               f"(has {list(batch.columns)})")


def cross_product_frame(qids: Sequence[str], queries: Sequence[str], pids: Sequence[str],
                        passages: Sequence[str]) -> pd.DataFrame:
    """Every (query, passage) pair as a pairs frame, query-major."""
    nq, npas = len(queries), len(passages)
    qi = np.repeat(np.arange(nq), npas)
    pi = np.tile(np.arange(npas), nq)
    return pd.DataFrame({
        "qid": np.asarray(list(qids), dtype=object)[qi] if nq else np.array([], dtype=object),
        "pid": np.asarray(list(pids), dtype=object)[pi] if npas else np.array([], dtype=object),
        "query": np.asarray(list(queries), dtype=object)[qi] if nq else np.array([], dtype=object),
        "passage": np.asarray(list(passages), dtype=object)[pi] if npas else np.array([], dtype=object),
    })


def factorize(values: Sequence) -> tuple[list, np.ndarray]:
    """Distinct values (first-seen order) and, per input, the index of its distinct value.

    Teachers encode each distinct query / passage of a batch once: pairs frames repeat them a lot
    (one query with many candidates; one positive in several triples).
    """
    codes, uniques = pd.factorize(pd.Series(list(values), dtype=object), sort=False)
    return list(uniques), codes.astype(np.int64)


def _check_aligned(ids: Sequence, texts: Sequence, a: str, b: str) -> None:
    if len(ids) != len(texts):
        raise ValueError(f"{a} and {b} differ in length ({len(ids)} vs {len(texts)})")
