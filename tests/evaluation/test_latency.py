"""Latency percentiles and the per-stage timer."""

import time

import numpy as np
import pytest

from tasb_ray.errors import TasbRayError
from tasb_ray.evaluation.latency import LatencyStats, StageTimer


def test_percentiles_are_linear_and_in_ms():
    stats = LatencyStats.from_seconds([0.004, 0.001, 0.003, 0.002])
    assert stats.n == 4
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.p99_ms == pytest.approx(3.97)  # 3 + 0.97 · (4 - 3): linear between the two largest
    assert stats.mean_ms == pytest.approx(2.5)
    many = np.linspace(0.0, 1.0, 101)
    assert LatencyStats.from_seconds(many).p99_ms == pytest.approx(990.0)
    assert LatencyStats.from_seconds([0.007]).to_dict() == {"p50_ms": 7.0, "p99_ms": 7.0, "mean_ms": 7.0, "n": 1}
    with pytest.raises(TasbRayError, match="no timings"):
        LatencyStats.from_seconds([])


def test_stage_timer_times_calls_and_sums_totals():
    timer = StageTimer()
    assert timer.time("sleep", time.sleep, 0.002) is None
    assert timer.time("add", lambda a, b=0: a + b, 1, b=2) == 3
    assert timer.seconds["sleep"][0] >= 0.002
    with timer.measure("sleep"):
        time.sleep(0.001)
    with pytest.raises(ValueError), timer.measure("failing"):
        raise ValueError("boom")
    assert "failing" not in timer.seconds  # a call that raised is not a latency sample

    timer = StageTimer()
    for a, b in ((0.001, 0.010), (0.002, 0.020), (0.003, 0.030)):
        timer.record("a", a)
        timer.record("b", b)
    assert timer.total("a+b", ["a", "b"]) == pytest.approx([0.011, 0.022, 0.033])
    stats = timer.stats()
    assert list(stats) == ["a", "b", "a+b"]
    assert stats["a+b"].p50_ms == pytest.approx(22.0)
    timer.record("a", 0.004)
    with pytest.raises(TasbRayError, match="different number"):
        timer.total("bad", ["a", "b"])
    with pytest.raises(TasbRayError, match="no timings"):
        timer.total("bad", ["a", "c"])
