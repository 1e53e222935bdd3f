"""The sweep configuration: a base training config, a grid over its keys, and how to run and track the trials."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasb_ray.config import from_dict, load_yaml
from tasb_ray.errors import ConfigError


@dataclass
class ResourcesConfig:
    """What one trial asks Ray for.

    ``gpus_per_trial`` ``auto`` means one GPU when the cluster has any, else none; ``cpus_per_trial`` is
    what a trial gets on a CPU-only cluster (and beside its GPU otherwise).
    """

    cpus_per_trial: float = 2.0
    gpus_per_trial: Any = "auto"
    max_concurrent_trials: int | None = None

    def __post_init__(self):
        if self.gpus_per_trial != "auto" and not isinstance(self.gpus_per_trial, (int, float)):
            raise ConfigError(f"resources.gpus_per_trial: 'auto' or a number, got {self.gpus_per_trial!r}")
        if self.cpus_per_trial <= 0:
            raise ConfigError("resources.cpus_per_trial must be > 0")


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


@dataclass
class RayConfig:
    address: str | None = None        # default: $RAY_ADDRESS, else a local instance on 127.0.0.1
    num_cpus: int | None = None       # CPUs of a local instance (default: all)
    ship_shared: str = "auto"         # send shared stage files to trials: auto (multi-node) | always | never

    def __post_init__(self):
        if self.ship_shared not in ("auto", "always", "never"):
            raise ConfigError(f"ray.ship_shared: auto | always | never, got {self.ship_shared!r}")


@dataclass
class FaultConfig:
    """Fault injection for tests: kill the trial whose grid values include ``match`` right after the checkpoint
    at ``after_checkpoint_step``, once per sweep (a marker file in the run directory remembers it)."""

    match: dict = field(default_factory=dict)
    after_checkpoint_step: int | None = None


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
        if self.max_failures < 0:
            raise ConfigError("max_failures must be >= 0")

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
