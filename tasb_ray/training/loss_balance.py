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
* ``match-loss`` (the default): ``zscore`` times one factor ``c``, chosen once per run so that on the calibration
  sample, at the student's initial weights, ``REFERENCE_ALPHA * L_inb = L_pair`` with ``REFERENCE_ALPHA`` = 0.75,
  the paper's alpha. ``L_inb(c) = A - 2cB + c^2 T`` (A, B, T: the means of s^2, s t and t^2 over the in-batch
  margins s of the student and t of the z-scored teacher), so ``c`` is the larger root of
  ``T c^2 - 2B c + A - L_pair / 0.75 = 0``, or ``B / T`` (the smallest reachable ``L_inb``) when there is none.
  The reference is fixed, not the run's alpha, so a run's alpha / 0.75 is its starting weighted ratio on random
  batches and an alpha sweep still compares weights.

Measured on SciFact (``benchmarks/results/loss_balance.md``): the z-scored teacher's in-batch margins have about
the pairwise margins' sd (2.95 vs 2.84) but twice their mean (9.3 vs 4.7), so ``match-pairwise`` moves the factor
only to 0.96 and the weighted ratio stays above 2 on random batches; matching the margins' size instead would
undershoot, because the pretrained student's own in-batch margins (~4) already meet much of it. Hence
``match-loss``, which balances what alpha weighs.

Calibration sample (both ``match-*`` modes): :data:`CALIBRATION_BATCHES` batches of the run's batch size with random composition and
uniform pairs, from a sampler seeded with :data:`CALIBRATION_SEED`, not the run's seed or sampling. So the factor
depends only on the training pairs, the teacher and the batch size: every arm and seed of a sweep on one dataset
trains with the same factor (``match-loss`` also reads the student's initial weights, the same for every arm of a
seed), and alpha weighs the same in-batch scale in all of them. Deterministic: the same pairs, teacher and initial
weights give the same factor, also after a resume (the trainer calibrates before it loads a checkpoint).

Deviation from the authors' code: their in-batch teacher (ColBERT) is used raw, and its margins are of the size
of their pairwise teacher's by construction of those models; there is no rescaling there.

Margins, as the losses define them: pairwise ``t(q_i, p_i+) - t(q_i, p_i-)``; in-batch ``T[i, i+] - T[i, j]`` for
every other triple's positive and negative ``j != i`` (:func:`tasb_ray.losses.inbatch_margin_mse`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from enum import Enum

import numpy as np

from tasb_ray.teachers.ensemble import znorm_rows
from tasb_ray.training.sampling import Batch, BatchSampler, PairIds, PairsLike, SamplerConfig

log = logging.getLogger(__name__)

CALIBRATION_BATCHES = 8
CALIBRATION_SEED = 0
REFERENCE_ALPHA = 0.75  # the paper's alpha: match-loss makes REFERENCE_ALPHA * L_inb = L_pair at the start


class InBatchScale(str, Enum):
    """How the in-batch teacher's scores are scaled (``teachers.inbatch_scale``)."""

    RAW = "raw"
    ZSCORE = "zscore"
    MATCH_PAIRWISE = "match-pairwise"
    MATCH_LOSS = "match-loss"


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


def calibration_batches(pairs: PairsLike, batch_size: int, ids: PairIds | None = None) -> list[Batch]:
    """The fixed calibration sample (see the module docstring); ``ids`` when the pairs hold row codes."""
    sampler = BatchSampler(pairs, SamplerConfig(sampling="random", pair_strategy="random", batch_size=batch_size,
                                                seed=CALIBRATION_SEED), ids=ids)
    n = min(CALIBRATION_BATCHES, sampler.batches_per_epoch)
    return [next(sampler) for _ in range(n)]


class ScaledInBatchTeacher:
    """The in-batch teacher with its scale applied; ``score_matrix`` and ``precompute`` as the teacher's.

    Args:
        teacher: the in-batch teacher (anything with ``score_matrix``; an ensemble exposes ``components`` and
            ``weights``).
        mode: one of :data:`INBATCH_SCALES`.
        calibration: for the ``match-*`` modes, returns the calibration batches and a function giving a batch's
            (query texts, [positive; negative] passage texts); called once, on the
            first score (after the trainer's ``precompute``, so the teacher's vectors are cached by then).
        student: for ``match-loss``, the student's B x 2B ``[positives; negatives]`` score matrix of a batch at its
            initial weights (scaled as in training, no dropout, no gradient).
    """

    def __init__(self, teacher, mode: str, calibration: Callable[[], tuple[list[Batch], Callable]] | None = None,
                 student: Callable[[Batch], np.ndarray] | None = None):
        self.teacher = teacher
        self.mode = InBatchScale(mode)
        self._calibration = calibration
        self._student = student
        self.factor: float | None = None if self.mode.value.startswith("match-") else 1.0
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
        """Set and return the factor (1 unless a ``match-*`` mode); logged with what it matched."""
        if self.factor is not None:
            return self.factor
        assert self._calibration is not None, f"{self.mode.value} needs a calibration sample"
        batches, texts = self._calibration()
        pair, inb, s_pair, s_inb = [], [], [], []
        for batch in batches:
            pids = batch.pos_pids + batch.neg_pids
            q_texts, p_texts = texts(batch)
            pair.append(pair_margins(batch.pos_scores, batch.neg_scores))
            inb.append(inbatch_margins(self.base_matrix(batch.qids, q_texts, pids, p_texts)))
            if self.mode is InBatchScale.MATCH_LOSS:
                assert self._student is not None, "match-loss needs the student's scores"
                s = np.asarray(self._student(batch), dtype=np.float64)
                b = len(batch)
                s_pair.append(np.diagonal(s[:, :b]) - np.diagonal(s[:, b:]))
                s_inb.append(inbatch_margins(s))
        pair_m, inb_m = np.concatenate(pair), np.concatenate(inb)
        pair_mean, pair_sd = spread(pair_m)
        inb_mean, inb_sd = spread(inb_m)
        stats = {"batches": float(len(batches)), "margin_sd_pair": pair_sd, "margin_mean_pair": pair_mean,
                 "margin_sd_inbatch_zscore": inb_sd, "margin_mean_inbatch_zscore": inb_mean}
        if self.mode is InBatchScale.MATCH_LOSS:
            s_m, t_m = np.concatenate(s_inb), inb_m
            a, b_, t = float(np.mean(s_m * s_m)), float(np.mean(s_m * t_m)), float(np.mean(t_m * t_m))
            loss_pair = float(np.mean((np.concatenate(s_pair) - pair_m) ** 2))
            target = loss_pair / REFERENCE_ALPHA
            disc = b_ * b_ - t * (a - target)
            if t <= 0:  # a constant teacher: nothing to scale
                self.factor = 1.0
            else:
                self.factor = (b_ + np.sqrt(disc)) / t if disc >= 0 else b_ / t
            if self.factor <= 0:  # a student ranking against the teacher: a negative scale would invert it
                log.warning("in-batch scale calibration: match-loss gives factor %.4g; using 1", self.factor)
                self.factor = 1.0
            stats.update({"loss_pair": loss_pair, "loss_inbatch_zscore": a - 2 * b_ + t,
                          "loss_inbatch": a - 2 * self.factor * b_ + self.factor ** 2 * t})
        elif inb_sd > 0 and pair_sd > 0:
            self.factor = pair_sd / inb_sd
        else:  # a degenerate sample (one query, constant teacher): nothing to match, keep the z-scores
            log.warning("in-batch scale calibration: margin sd pairwise %.4g, in-batch %.4g; using factor 1",
                        pair_sd, inb_sd)
            self.factor = 1.0
        self.calibration_stats = {**stats, "factor": float(self.factor)}
        log.info("in-batch scale calibrated (%s): %s", self.mode.value, self.calibration_stats)
        return self.factor
