"""Acceptance: the report opens in headless Chromium without errors or network access, every plot is
rendered, and the numbers in its tables are the MLflow metrics.

The page is loaded over the DevTools pipe (see ``chromium.py``), which reports console messages,
exceptions, browser log entries and network requests as structured events; the DOM is read back after
load and parsed with the stdlib HTML parser. Skipped only when no Chromium is installed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from chromium import chromium_path, visit
from dom import parse

pytestmark = pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (.ci/run installs it)")

SEEDS_PLOTS = ("plot-seed-spread", "plot-training-curves", "plot-pipeline-recall", "plot-latency")
GRID_PLOTS = ("plot-seed-spread", "plot-vs-alpha", "plot-vs-clusters-k", "plot-training-curves")

# For every figure: rendered size of its <svg>, and how many marks (paths, uses) it draws.
PROBE = """Object.fromEntries([...document.querySelectorAll('figure')].map(f => {
  const svg = f.querySelector('svg'); const r = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return [f.id, {w: r.width, h: r.height, marks: svg ? svg.querySelectorAll('path, use').length : 0}];
}))"""


def _check_page(path, plots):
    page = visit(path, probe=PROBE)
    assert page.errors == [], page.errors
    assert [u for u in page.requests if not u.startswith(("file:", "data:", "about:"))] == []
    for plot in plots:
        box = page.probe.get(plot)
        assert box is not None, f"{plot} missing"
        assert box["w"] > 200 and box["h"] > 100 and box["marks"] > 20, (plot, box)
    return page


def _close(cell, value: float, digits: int = 4):
    assert cell.value is not None and float(cell.value) == value
    assert abs(float(cell.text) - value) <= 0.5 * 10 ** -digits + 1e-12


def test_seeds_report_in_chromium(seeds_report, sweep_store):
    from mlflow.tracking import MlflowClient

    page = _check_page(seeds_report.path, SEEDS_PLOTS)
    tables, _ = parse(page.html)
    client = MlflowClient(sweep_store.uri)

    trials = tables["table-trials"]
    metric_keys = [k for k in trials.keys if k.startswith("final_")]
    assert len(metric_keys) == 8
    by_group: dict[str, list[dict]] = {}
    for row in trials.rows:
        run = client.get_run(row.attrs["data-run-id"])
        assert row.cells["status"].text == run.info.status
        assert row.cells["group"].text == run.data.tags["tasb.group"]
        for key in metric_keys:
            if key in run.data.metrics:
                _close(row.cells[key], run.data.metrics[key])
            else:
                assert run.info.status == "FAILED" and row.cells[key].value is None
        if run.info.status == "FINISHED":
            by_group.setdefault(run.data.tags["tasb.group"], []).append(run.data.metrics)
    assert sum(r.attrs.get("class") == "failed" for r in trials.rows) == 1

    for row in tables["table-seed-spread"].rows:
        values = np.array([m[row.cells["metric"].text] for m in by_group[row.cells["group"].text]])
        _close(row.cells["mean"], float(values.mean()))
        assert math.isclose(float(row.cells["sd"].value), float(values.std(ddof=1)), rel_tol=1e-9)
        assert int(row.cells["n"].text) == len(values)

    for row in tables["table-pipeline-recall"].rows:
        runs = by_group[row.cells["group"].text]
        for k in (10, 100, 1000):
            expected = float(np.mean([m[f"pipeline/{row.cells['pipeline'].text}/R_{k}"] for m in runs]))
            assert math.isclose(float(row.cells[f"R_{k}"].value), expected, rel_tol=1e-12)

    for row in tables["table-latency"].rows:
        stage = row.cells["stage"].text
        runs = [m for ms in by_group.values() for m in ms]
        expected = float(np.mean([m[f"latency/{stage}/p99_ms"] for m in runs]))
        assert math.isclose(float(row.cells["p99_ms"].value), expected, rel_tol=1e-12)


def test_grid_report_in_chromium(grid_report, sweep_store):
    from mlflow.tracking import MlflowClient

    page = _check_page(grid_report.path, GRID_PLOTS)
    tables, _ = parse(page.html)
    client = MlflowClient(sweep_store.uri)
    seen = 0
    for row in tables["table-trials"].rows:
        run = client.get_run(row.attrs["data-run-id"])
        assert float(row.cells["alpha"].value) == float(run.data.params["alpha"])
        assert int(row.cells["clusters.k"].value) == int(run.data.params["clusters.k"])
        if "final_test/nDCG_10" in run.data.metrics:
            _close(row.cells["final_test/nDCG_10"], run.data.metrics["final_test/nDCG_10"])
            seen += 1
    assert seen == 11


def test_harness_sees_errors_and_remote_loads(seeds_report, tmp_path):
    """The checks above can fail: a page that fetches something or throws is reported."""
    bad = tmp_path / "bad.html"
    bad.write_text(seeds_report.path.read_text().replace(
        "</body>", '<img src="https://example.invalid/x.png"><script>undefined_fn()</script></body>'))
    page = visit(bad)
    assert "https://example.invalid/x.png" in page.requests
    assert any("Content Security Policy" in e for e in page.errors)  # the image, blocked by the page's CSP
    assert any("Content Security Policy" in e and "script" in e for e in page.errors)  # inline script refused
