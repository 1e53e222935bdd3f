"""Per-query latency: wall-clock time of each stage per query, and percentiles over queries."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from tasb_ray.errors import TasbRayError

T = TypeVar("T")


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles (linear interpolation, numpy's default) and mean of per-query times, in milliseconds.

    Args:
        p50_ms, p99_ms: the median and 99th percentile.
        mean_ms: the mean.
        n: how many queries were timed.
    """

    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    @classmethod
    def from_seconds(cls, seconds: Sequence[float]) -> LatencyStats:
        values = np.asarray(seconds, dtype=np.float64) * 1000.0
        if values.size == 0:
            raise TasbRayError("latency: no timings to summarise")
        p50, p99 = np.percentile(values, [50, 99], method="linear")
        return cls(p50_ms=float(p50), p99_ms=float(p99), mean_ms=float(values.mean()), n=int(values.size))

    def to_dict(self) -> dict:
        return asdict(self)


class StageTimer:
    """Times one call per query per stage with :func:`time.perf_counter`.

    Each stage keeps its times in call order, so the i-th time of every stage belongs to the same
    query and a pipeline's per-query total is the element-wise sum of its stages (:meth:`total`).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Time the ``with`` body as one call of ``stage`` (a body that raises is not recorded)."""
        start = time.perf_counter()
        yield
        self.record(stage, time.perf_counter() - start)

    def time(self, stage: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """``fn(*args, **kwargs)``, timed as one call of ``stage``."""
        with self.measure(stage):
            return fn(*args, **kwargs)

    def record(self, stage: str, seconds: float) -> None:
        """Add one time (seconds) measured elsewhere to ``stage``."""
        self.seconds.setdefault(stage, []).append(float(seconds))

    def total(self, name: str, stages: Sequence[str]) -> list[float]:
        """Per-query sums of ``stages``' times, stored (and returned) under ``name``.

        Args:
            name: the total's name, e.g. ``pipeline:dense``.
            stages: stages timed once per query each, the same queries in the same order.
        """
        missing = [s for s in stages if s not in self.seconds]
        if not stages or missing:
            raise TasbRayError(f"latency total {name!r}: no timings for stage(s) {missing or list(stages)}")
        counts = {s: len(self.seconds[s]) for s in stages}
        if len(set(counts.values())) != 1:
            raise TasbRayError(f"latency total {name!r}: stages timed a different number of queries {counts}")
        sums = np.sum([self.seconds[s] for s in stages], axis=0)
        self.seconds[name] = [float(x) for x in sums]
        return self.seconds[name]

    def stats(self) -> dict[str, LatencyStats]:
        """:class:`LatencyStats` of every stage and total, in the order they were first recorded."""
        return {name: LatencyStats.from_seconds(times) for name, times in self.seconds.items()}
