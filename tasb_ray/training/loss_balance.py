"""The scale of the in-batch teacher, and the statistics that show whether the two loss terms are balanced.

TAS-Balanced trains on ``L = L_pair + alpha * L_inb`` (Hofstätter et al., SIGIR 2021, arXiv 2104.06967, Section
3.3). The paper chose alpha = 0.75 "to bring both losses into the same range"; that only holds when the pairwise
and the in-batch teacher give margins of comparable size. Here the in-batch teacher's scale is a choice
(``teachers.inbatch_scale``):

* ``raw``: the teacher's scores as they come (an ensemble sums its members' raw scores, weighted, with no per-row
  normalisation: BM25 in the tens dominates a cosine in [-1, 1]).
* ``zscore``: each query row z-normalised over the batch's passages (an ensemble normalises each member and sums,
  its own definition). For the default BM25 + MiniLM ensemble this is the behaviour before the option existed;
  a single (non-ensemble) in-batch teacher was used ``raw`` before.
* ``match-pairwise``: ``zscore`` times one factor, chosen once per run so that the sd of the in-batch teacher's
  margins equals the sd of the pairwise teacher's margins on a calibration sample.

Calibration sample: :data:`CALIBRATION_BATCHES` batches of the run's batch size with random composition and
uniform pairs, from a sampler seeded with :data:`CALIBRATION_SEED`, not the run's seed or sampling. So the factor
depends only on the training pairs, the teacher and the batch size: every arm and seed of a sweep on one dataset
trains with the same factor, and alpha weighs the same in-batch scale in all of them. Deterministic: the same
pairs and teacher give the same factor, also after a resume.

Deviation from the authors' code: their in-batch teacher (ColBERT) is used raw, and its margins are of the size
of their pairwise teacher's by construction of those models; there is no rescaling there.

Margins, as the losses define them: pairwise ``t(q_i, p_i+) - t(q_i, p_i-)``; in-batch ``T[i, i+] - T[i, j]`` for
every other triple's positive and negative ``j != i`` (:func:`tasb_ray.losses.inbatch_margin_mse`).
"""

from __future__ import annotations

import logging
from enum import Enum
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from tasb_ray.teachers.ensemble import znorm_rows
from tasb_ray.training.sampling import Batch, BatchSampler, SamplerConfig

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8
CALIBRATION_SEED = 0


class InBatchScale(str, Enum):
    """How the in-batch teacher's scores are scaled (``teachers.inbatch_scale``)."""

    RAW = "raw"
    ZSCORE = "zscore"
    MATCH_PAIRWISE = "match-pairwise"


INBATCH_SCALES = tuple(s.value for s in InBatchScale)


def pair_margins(pos_scores: np.ndarray, neg_scores: np.ndarray) -> np.ndarray:
    return np.asarray(pos_scores, dtype=np.float64) - np.asarray(neg_scores, dtype=np.float64)


def inbatch_margins(matrix: np.ndarray) -> np.ndarray:
    """The in-batch margins of a B x 2B ``[positives; negatives]`` teacher matrix, as the in-batch loss uses them."""
    m = np.asarray(matrix, dtype=np.float64)
    b = m.shape[0]
    if b < 2:
        return np.zeros(0)
    off = ~np.eye(b, dtype=bool)
    own = np.diagonal(m[:, :b])[:, None]
    return np.concatenate([(own - m[:, :b])[off], (own - m[:, b:])[off]])


def spread(margins: np.ndarray) -> tuple[float, float]:
    """(mean, population sd) of margins; (0, 0) when there are none."""
    if len(margins) == 0:
        return 0.0, 0.0
    return float(np.mean(margins)), float(np.std(margins))


def calibration_batches(pairs: pd.DataFrame, batch_size: int) -> list[Batch]:
    """The fixed calibration sample (see the module docstring)."""
    sampler = BatchSampler(pairs, SamplerConfig(sampling="random", pair_strategy="random", batch_size=batch_size,
                                                seed=CALIBRATION_SEED))
    n = min(CALIBRATION_BATCHES, sampler.batches_per_epoch)
    return [next(sampler) for _ in range(n)]


class ScaledInBatchTeacher:
    """The in-batch teacher with its scale applied; ``score_matrix`` and ``precompute`` as the teacher's.

    Args:
        teacher: the in-batch teacher (anything with ``score_matrix``; an ensemble exposes ``components`` and
            ``weights``).
        mode: one of :data:`INBATCH_SCALES`.
        calibration: for ``match-pairwise``, returns the calibration batches and their texts; called once, on the
            first score (after the trainer's ``precompute``, so the teacher's vectors are cached by then).
    """

    def __init__(self, teacher, mode: str, calibration: Callable[[], tuple[list[Batch], dict, dict]] | None = None):
        self.teacher = teacher
        self.mode = InBatchScale(mode)
        self._calibration = calibration
        self.factor: float | None = None if self.mode is InBatchScale.MATCH_PAIRWISE else 1.0
        self.calibration_stats: dict[str, float] = {}

    def precompute(self, ids, texts, kind) -> None:
        pre = getattr(self.teacher, "precompute", None)
        if pre is not None:
            pre(ids, texts, kind)

    def base_matrix(self, qids: Sequence[str], queries: Sequence[str], pids: Sequence[str],
                    passages: Sequence[str]) -> np.ndarray:
        """The teacher's matrix before the calibrated factor: raw, or z-normalised per row."""
        members = getattr(self.teacher, "components", None)
        if self.mode is InBatchScale.RAW:
            if members is None:
                return np.asarray(self.teacher.score_matrix(qids, queries, pids, passages), dtype=np.float64)
            return sum(w * np.asarray(t.score_matrix(qids, queries, pids, passages), dtype=np.float64)
                       for t, w in zip(members, self.teacher.weights))
        if members is not None:  # an ensemble z-normalises each member per row already
            return np.asarray(self.teacher.score_matrix(qids, queries, pids, passages), dtype=np.float64)
        return znorm_rows(self.teacher.score_matrix(qids, queries, pids, passages))

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        if self.factor is None:
            self.calibrate()
        return self.factor * self.base_matrix(qids, queries, pids, passages)

    def calibrate(self) -> float:
        """Set and return the factor (1 unless ``match-pairwise``); logged with the spreads it matched."""
        if self.factor is not None:
            return self.factor
        assert self._calibration is not None, "match-pairwise needs a calibration sample"
        batches, query_text, passage_text = self._calibration()
        pair, inb = [], []
        for batch in batches:
            pids = batch.pos_pids + batch.neg_pids
            pair.append(pair_margins(batch.pos_scores, batch.neg_scores))
            inb.append(inbatch_margins(self.base_matrix(batch.qids, [query_text[q] for q in batch.qids], pids,
                                                        [passage_text[p] for p in pids])))
        pair_mean, pair_sd = spread(np.concatenate(pair))
        inb_mean, inb_sd = spread(np.concatenate(inb))
        if inb_sd > 0 and pair_sd > 0:
            self.factor = pair_sd / inb_sd
        else:  # a degenerate sample (one query, constant teacher): nothing to match, keep the z-scores
            log.warning("in-batch scale calibration: margin sd pairwise %.4g, in-batch %.4g; using factor 1",
                        pair_sd, inb_sd)
            self.factor = 1.0
        self.calibration_stats = {"batches": float(len(batches)), "margin_sd_pair": pair_sd,
                                  "margin_mean_pair": pair_mean, "margin_sd_inbatch_zscore": inb_sd,
                                  "margin_mean_inbatch_zscore": inb_mean, "factor": self.factor}
        log.info("in-batch scale calibrated: %s", self.calibration_stats)
        return self.factor
