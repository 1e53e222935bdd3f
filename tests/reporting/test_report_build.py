"""The whole report: sections and notes, failed trials kept, the CLI, and the artifact on the summary run."""

from __future__ import annotations

from pathlib import Path

import pytest
from dom import parse
from report_fixture import ALPHA_FAILED, SEEDS_FAILED

from tasb_ray.cli import main
from tasb_ray.errors import TasbRayError
from tasb_ray.reporting import build_report, log_report
from tasb_ray.reporting.plots import FAILED_STYLE


def _figure(html: str, plot_id: str) -> str:
    start = html.index(f'<figure id="{plot_id}">')
    return html[start:html.index("</figure>", start)]


def _marks_failed(svg: str) -> bool:
    return f"stroke: {FAILED_STYLE['color']}" in svg


def test_seed_sweep_report(seeds_report):
    html = seeds_report.path.read_text()
    tables, ids = parse(html)
    for plot in ("plot-seed-spread", "plot-training-curves", "plot-pipeline-recall", "plot-latency"):
        assert ids.get(plot) == "figure", plot
    # no alpha / cluster variation: sections say so instead of drawing
    assert "plot-vs-alpha" not in ids and "plot-vs-clusters-k" not in ids
    assert "No variation in alpha (all trials have alpha=0.75)" in html
    assert "No variation in clusters.k (all trials have clusters.k=20)" in html
    trials = tables["table-trials"]
    failed = [r for r in trials.rows if r.cells["trial"].text == SEEDS_FAILED]
    assert len(failed) == 1 and failed[0].attrs["class"] == "failed" and failed[0].cells["status"].text == "FAILED"
    assert len(trials.rows) == 6
    assert all(_marks_failed(_figure(html, p)) for p in ("plot-seed-spread", "plot-training-curves"))
    spread = tables["table-seed-spread"]
    tasb = next(r for r in spread.rows if r.cells["group"].text == "sampler.sampling=tasb"
                and r.cells["metric"].text == "final_test/nDCG_10")
    assert tasb.cells["n"].text == "2" and tasb.cells["failed"].text == "1"
    assert {r.cells["pipeline"].text for r in tables["table-pipeline-recall"].rows} == {
        "bm25", "dense", "fusion-interp", "fusion-rrf", "rerank"}
    assert len(tables["table-latency"].rows) == 11
    assert len(tables["table-comparisons"].rows) == 1
    # self-contained: nothing to run, nothing to fetch
    assert "<script" not in html and "<link" not in html and " src=" not in html and 'href="http' not in html
    assert "<metadata>" not in html


def test_grid_sweep_report_and_missing_sections(grid_report):
    html = grid_report.path.read_text()
    tables, ids = parse(html)
    assert ids.get("plot-vs-alpha") == "figure" and ids.get("plot-vs-clusters-k") == "figure"
    rows = tables["table-vs-alpha"].rows
    at_zero = next(r for r in rows if r.cells["alpha"].text == "0" and r.cells["series"].text == "clusters.k=20"
                   and r.cells["metric"].text == "final_test/nDCG_10")
    assert at_zero.cells["n"].text == "1" and at_zero.cells["failed"].text == "1"
    assert ALPHA_FAILED in html
    assert all(_marks_failed(_figure(html, p)) for p in ("plot-seed-spread", "plot-vs-alpha", "plot-vs-clusters-k"))
    # no dev history, no pipelines: notes, not empty plots
    assert ids.get("plot-training-curves") == "figure" and "No dev/nDCG_10 history" in html
    assert "plot-pipeline-recall" not in ids and "plot-latency" not in ids
    assert "No pipeline/&lt;pipeline&gt;/R_&lt;k&gt; metrics were logged" in html


def test_cli_logs_to_summary_run(seeds_report, sweep_store, tmp_path):
    from mlflow.tracking import MlflowClient

    assert f"report: {seeds_report.path}" in seeds_report.stdout and "1 failed, 5 finished" in seeds_report.stdout
    summary = sweep_store.sweeps["seeds"].summary_run_id
    assert f"logged as artifact report.html of run {summary}" in seeds_report.stdout
    client = MlflowClient(sweep_store.uri)
    assert "report.html" in [a.path for a in client.list_artifacts(summary)]
    local = client.download_artifacts(summary, "report.html", str(tmp_path))
    assert Path(local).read_text() == seeds_report.path.read_text()


def test_log_report_to_a_given_run(grid_report, sweep_store):
    from mlflow.tracking import MlflowClient

    run_id = sweep_store.sweeps["alpha-k"].trials[0].run_id
    assert log_report(grid_report.path, sweep_store.uri, run_id=run_id) == run_id
    assert "report.html" in [a.path for a in MlflowClient(sweep_store.uri).list_artifacts(run_id)]


def test_build_report_refuses_unfinished(sweep_store, tmp_path):
    with pytest.raises(TasbRayError, match="no finished trials yet"):
        build_report("unfinished", sweep_store.uri, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli_errors_are_one_line(sweep_store, tmp_path, capsys):
    for experiment in ("nope", "empty", "foreign", "unfinished"):
        assert main(["report", "--experiment", experiment, "--tracking-uri", sweep_store.uri,
                     "--out", str(tmp_path / "x.html")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("tasb-ray report: error: ") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()



def test_log_report_needs_a_summary_run(seeds_report, sweep_store):
    with pytest.raises(TasbRayError, match="has no summary run"):
        log_report(seeds_report.path, sweep_store.uri, experiment="unfinished")
