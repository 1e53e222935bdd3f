"""The untrained reference: the sweep's student before any training step, evaluated once like a trial.

It runs as one more Tune trial rather than in the driver: the same code path as every trial (``run_training``
with zero steps, then ``write_final``'s per-query metrics and retrieval pipelines), so it is evaluated at exactly the
trials' settings (student model, pooling, normalisation, max lengths, evaluation depth); it runs beside the first
training trial instead of delaying them all; and Tune's restore keeps its result when a sweep is continued. Its
cost is one corpus encoding and the pipelines, no training.
"""

from __future__ import annotations

import logging

from tasb_ray.experiments.grid import TrialSpec

log = logging.getLogger(__name__)

REFERENCE_GROUP = "untrained"
# Zero optimizer steps and no periodic dev evaluation: the selected model is the student as loaded.
UNTRAINED = {"optim.max_steps": 0, "optim.epochs": None, "eval.every": 0}
# Grid keys that change the untrained model itself or what it is evaluated on; one reference cannot stand for all.
MODEL_KEYS = ("student.", "data.", "eval.")


def reference_spec(trials: list[TrialSpec], baseline: str) -> tuple[TrialSpec, TrialSpec]:
    """The reference trial (no grid values of its own) and the trial whose settings it takes (the baseline's first).

    The seed, the sampler, α and the cluster count do not change an untrained student; grid keys that do (student,
    data or evaluation settings) are taken from the baseline group, with a warning.
    """
    source = next(t for t in trials if t.group == baseline)
    varied = sorted({k for t in trials for k in t.values if k.startswith(MODEL_KEYS)})
    if varied:
        log.warning("the grid varies %s: the untrained reference uses the baseline group's values (%s)",
                    ", ".join(varied), source.key)
    return TrialSpec({}, REFERENCE_GROUP, REFERENCE_GROUP), source
