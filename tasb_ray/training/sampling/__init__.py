"""Batch composition for TAS-Balanced: compositions and pair strategies chosen by name, the sampler, the plan."""

from tasb_ray.training.sampling.config import PAIR_STRATEGIES, SAMPLINGS, Composition, PairStrategy, SamplerConfig
from tasb_ray.training.sampling.plan import PLAN_COLUMNS, build_plan, plan_hash, read_plan, write_plan
from tasb_ray.training.sampling.sampler import Batch, BatchSampler, ClusterAssignment, PairIds, PairsLike
from tasb_ray.training.sampling.stats import plan_metrics, plan_statistics

__all__ = ["Batch", "BatchSampler", "ClusterAssignment", "Composition", "PAIR_STRATEGIES", "PLAN_COLUMNS",
           "PairIds", "PairStrategy", "PairsLike", "SAMPLINGS", "SamplerConfig", "build_plan", "plan_hash",
           "plan_metrics", "plan_statistics", "read_plan", "write_plan"]
