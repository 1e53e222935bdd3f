"""The sweep configuration: a base training config, a grid over its keys, and how to run and track the trials."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasb_ray.config import check_range, from_dict, load_yaml
from tasb_ray.distributed.ray_data import trial_bundles
from tasb_ray.errors import ConfigError


@dataclass
class ResourcesConfig:
    """What one trial asks Ray for.

    ``gpus_per_trial``: ``auto`` (one GPU when the cluster has any, else none), ``0``, a fraction in (0, 1] (e.g.
    0.25 packs four small trials onto one large GPU) or a whole number of GPUs. ``cpus_per_trial`` is what a trial
    gets on a CPU-only cluster (and beside its GPU otherwise). ``max_concurrent_trials`` is capped at what the
    cluster's GPUs allow.

    ``eval_workers``: encoder actors each trial reserves for its own Ray Data evaluation (needed when the corpus
    has ``eval.ray_min_passages`` passages or more). The trial's placement group then holds, on one node, its
    trainer's bundle, ``eval_workers`` more of the same shape but at most one GPU (one encoder actor each) and one
    CPU for Ray Data's read tasks (:func:`tasb_ray.distributed.ray_data.trial_bundles`). 0 (default): trials
    evaluate in process.
    """

    cpus_per_trial: float = 2.0
    gpus_per_trial: Any = "auto"
    max_concurrent_trials: int | None = None
    eval_workers: int = 0

    def __post_init__(self):
        g = self.gpus_per_trial
        if g != "auto":
            if isinstance(g, bool) or not isinstance(g, (int, float)):
                raise ConfigError(f"resources.gpus_per_trial: 'auto' or a number, got {g!r}")
            # Ray shares a GPU only in fractions of one, and several GPUs only whole: 1.5 GPUs cannot be placed.
            if g < 0 or (g > 1 and float(g) != int(g)):
                raise ConfigError(f"resources.gpus_per_trial: 0, a fraction in (0, 1] or a whole number >= 1, "
                                  f"got {g!r}")
        if isinstance(self.cpus_per_trial, bool) or not isinstance(self.cpus_per_trial, (int, float)) \
                or self.cpus_per_trial <= 0:
            raise ConfigError(f"resources.cpus_per_trial: a number > 0, got {self.cpus_per_trial!r}")
        w = self.eval_workers
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ConfigError(f"resources.eval_workers: an integer >= 0, got {w!r}")
        m = self.max_concurrent_trials
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ConfigError(f"resources.max_concurrent_trials: an integer >= 1, got {m!r}")

    def gpus_for(self, cluster_gpus: float) -> float:
        """GPUs one trial asks for on a cluster with ``cluster_gpus`` GPUs."""
        if self.gpus_per_trial == "auto":
            return 1.0 if cluster_gpus > 0 else 0.0
        return float(self.gpus_per_trial)

    def concurrency(self, cluster_cpus: float, cluster_gpus: float) -> tuple[float, int | None]:
        """(GPUs per trial, the most trials that may run at once: the configured cap and what the GPUs allow).

        Raises ConfigError when trials ask for GPUs the cluster does not have: they would wait forever.
        """
        gpus = self.gpus_for(cluster_gpus)
        limit = self.max_concurrent_trials
        if gpus > 0:
            held = self.trial_gpus(gpus)
            if held > cluster_gpus:
                workers = (f" (with {self.eval_workers} eval worker(s) of as many), {held:g} in all"
                           if self.eval_workers else "")
                raise ConfigError(f"resources.gpus_per_trial: {gpus:g} GPU(s) per trial{workers}, "
                                  f"but the Ray cluster has {cluster_gpus:g}")
            # The small epsilon keeps 1/0.1 = 9.999... from losing a trial to float rounding.
            fit = int(cluster_gpus / held + 1e-9)
            limit = fit if limit is None else min(limit, fit)
        return gpus, limit

    def trial_bundles(self, gpus: float) -> list[dict]:
        """The trial's bundles for a trainer of ``gpus`` GPUs (resolved): :func:`trial_bundles`' layout."""
        return trial_bundles(self.cpus_per_trial, gpus, self.eval_workers)

    def trial_gpus(self, gpus: float) -> float:
        """GPUs a trial holds: its trainer's ``gpus`` and its eval workers' (at most one each)."""
        return sum(b.get("GPU", 0.0) for b in self.trial_bundles(gpus))

    def check_group(self, nodes: list[tuple[float, float]], gpus: float) -> None:
        """Raise ConfigError when a trial's placement group fits no node: the sweep would wait forever.

        ``nodes``: (CPUs, GPUs) of each alive node; ``gpus``: the trainer's GPUs (resolved). The group is packed on
        one node (its Ray Data reads use the trial's local files), so one node must hold the trainer's CPUs and
        GPUs, each eval worker's and the reader's CPU.
        """
        if self.eval_workers <= 0:
            return
        bundles = self.trial_bundles(gpus)
        cpus = sum(b["CPU"] for b in bundles)
        gpu_need = sum(b.get("GPU", 0.0) for b in bundles)
        if any(c + 1e-9 >= cpus and g + 1e-9 >= gpu_need for c, g in nodes):
            return
        listed = ", ".join(f"{c:g} CPUs / {g:g} GPUs" for c, g in nodes) or "none"
        raise ConfigError(f"resources.eval_workers: a trial with {self.eval_workers} eval worker(s) holds "
                          f"{cpus:g} CPUs ({self.cpus_per_trial:g} x {1 + self.eval_workers} + 1 for reading) and "
                          f"{gpu_need:g} GPUs on one node, but no Ray node has that ({listed})")


@dataclass
class MlflowConfig:
    tracking_uri: str | None = None   # default: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db
    experiment: str | None = None     # default: the sweep name


@dataclass
class PipelinesConfig:
    """Retrieval pipelines evaluated for every trained model on the test split."""

    enabled: bool = True
    split: str = "test"
    rerank_depth: int = 100
    interp_weight: float = 0.5        # weight of dense in BM25 + dense score interpolation
    rrf_k: int = 60

    def __post_init__(self):
        check_range("rerank_depth", self.rerank_depth, 1, integer=True)
        check_range("interp_weight", self.interp_weight, 0, 1)
        check_range("rrf_k", self.rrf_k, 0, integer=True)


@dataclass
class RayConfig:
    address: str | None = None        # default: $RAY_ADDRESS, else a local instance on 127.0.0.1
    num_cpus: int | None = None       # CPUs of a local instance (default: all)
    num_gpus: int | None = None       # GPUs of a local instance (default: those detected; logical ones on a CPU box)
    ship_shared: str = "auto"         # send shared stage files to trials: auto (multi-node) | always | never

    def __post_init__(self):
        check_range("num_cpus", self.num_cpus, 1, integer=True, allow_none=True)
        if self.ship_shared not in ("auto", "always", "never"):
            raise ConfigError(f"ray.ship_shared: auto | always | never, got {self.ship_shared!r}")


@dataclass
class FaultConfig:
    """Fault injection for tests: kill the trial whose grid values include ``match`` right after the checkpoint
    at ``after_checkpoint_step``, once per sweep (a marker file in the run directory remembers it)."""

    match: dict = field(default_factory=dict)
    after_checkpoint_step: int | None = None

    def __post_init__(self):
        check_range("after_checkpoint_step", self.after_checkpoint_step, 1, integer=True, allow_none=True)


@dataclass
class SweepConfig:
    """A sweep: the trials are the cartesian product of ``grid`` applied to the base training config.

    Args:
        name: sweep name, also the MLflow experiment name by default.
        base: training config YAML, relative to the sweep file.
        run_dir: where everything of the sweep goes (made absolute): Tune storage, Ray temp dir, MLflow DB.
        set: overrides applied to every trial (dotted keys).
        grid: dotted key -> list of values.
        baseline: grid values of the group every other group is compared with (default: the first group).
        compare_metrics: test metrics for the paired per-query tests.
        max_failures: retries of a failed trial, each resuming from its last checkpoint.
        reference: also evaluate the untrained student once at the trials' settings, as the group ``untrained``
            that every group is compared with (``experiments/reference.py``).
    """

    name: str
    base: str
    run_dir: str | None = None
    set: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    baseline: dict | None = None
    compare_metrics: list[str] = field(default_factory=lambda: ["nDCG@10", "R@100"])
    max_failures: int = 2
    reference: bool = True
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    pipelines: PipelinesConfig = field(default_factory=PipelinesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    source: str | None = None         # the file this was loaded from (set by load_sweep_config)

    def __post_init__(self):
        if not self.grid:
            raise ConfigError("grid: at least one key with a list of values is needed")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key}: expected a non-empty list of values")
            if len({repr(v) for v in values}) != len(values):
                raise ConfigError(f"grid.{key}: repeated values {values}")
        if self.baseline is not None:
            unknown = set(self.baseline) - set(self.grid)
            if unknown:
                raise ConfigError(f"baseline: {sorted(unknown)} not in grid")
        check_range("max_failures", self.max_failures, 0, integer=True)

    def base_path(self) -> Path:
        base = Path(self.base)
        if not base.is_absolute() and self.source:
            base = Path(self.source).parent / base
        return base

    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir or Path("runs") / "sweeps" / self.name).expanduser().resolve()


def load_sweep_config(path: str | Path, overrides: dict | None = None) -> SweepConfig:
    """Load a sweep YAML; ``overrides`` (top-level keys) replace values before validation."""
    data = load_yaml(path)
    data.update(overrides or {})
    data["source"] = str(Path(path).resolve())
    try:
        return from_dict(SweepConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
