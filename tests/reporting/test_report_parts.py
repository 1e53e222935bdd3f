"""The derived tables, the SVG post-processing and the HTML table rendering, on small hand-made frames."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from dom import parse

from tasb_ray.reporting import frames, plots
from tasb_ray.reporting.html import Table, header_label, render_table


def _trials() -> pd.DataFrame:
    return pd.DataFrame([
        {"run_id": "r1", "trial": "a0", "group": "g=a", "status": "FINISHED", "seed": 0, "alpha": 0.0,
         "final_test/nDCG_10": 0.50, "pipeline/bm25/R_10": 0.2, "pipeline/bm25/R_100": 0.6,
         "latency/bm25/p50_ms": 1.0, "latency/bm25/p99_ms": 3.0, "latency/pipeline:bm25/p50_ms": 2.0},
        {"run_id": "r2", "trial": "a1", "group": "g=a", "status": "FINISHED", "seed": 1, "alpha": 0.0,
         "final_test/nDCG_10": 0.54, "pipeline/bm25/R_10": 0.4, "pipeline/bm25/R_100": 0.8,
         "latency/bm25/p50_ms": 3.0, "latency/bm25/p99_ms": 5.0, "latency/pipeline:bm25/p50_ms": 4.0},
        {"run_id": "r3", "trial": "b0", "group": "g=b", "status": "FINISHED", "seed": 0, "alpha": 0.5,
         "final_test/nDCG_10": 0.60},
        {"run_id": "r4", "trial": "b1", "group": "g=b", "status": "FAILED", "seed": 1, "alpha": 0.5,
         "final_test/nDCG_10": math.nan, "pipeline/bm25/R_10": 0.9},
    ])


def test_seed_spread_uses_finished_trials_and_counts_failures():
    out = frames.seed_spread(_trials(), ["final_test/nDCG_10", "final_test/absent"]).set_index("group")
    a, b = out.loc["g=a"], out.loc["g=b"]
    assert a["n"] == 2 and a["mean"] == pytest.approx(0.52) and a["sd"] == pytest.approx(np.std([0.5, 0.54], ddof=1))
    assert (a["min"], a["max"], a["failed"]) == (0.5, 0.54, 0)
    assert b["n"] == 1 and b["sd"] == 0.0 and b["failed"] == 1


def test_knob_sweep_and_values():
    t = _trials()
    assert frames.knob_values(t, "alpha") == [0.0, 0.5] and frames.knob_values(t, "missing") == []
    out = frames.knob_sweep(t, "alpha", ["final_test/nDCG_10"])
    assert out["alpha"].tolist() == [0.0, 0.5] and out["n"].tolist() == [2, 1] and out["failed"].tolist() == [0, 1]
    assert set(out["series"]) == {""}


def test_series_label_names_the_other_varied_knobs():
    t = pd.DataFrame({"alpha": [0.0, 0.0, 1.0], "clusters.k": [5, 20, 5], "x": [1, 1, 1]})
    assert frames.series_label(t, "alpha", ["clusters.k", "x"]).tolist() == ["clusters.k=5", "clusters.k=20",
                                                                              "clusters.k=5"]


def test_pipeline_recall_means_over_finished_only():
    out = frames.pipeline_recall(_trials())
    assert out[["group", "pipeline", "n"]].values.tolist() == [["g=a", "bm25", 2]]
    assert out["R_10"].iloc[0] == pytest.approx(0.3) and out["R_100"].iloc[0] == pytest.approx(0.7)
    assert list(out.columns) == ["group", "pipeline", "n", "R_10", "R_100", "nDCG_10", "MRR_10"]


def test_latency_per_stage_and_pipeline():
    out = frames.latency(_trials()).set_index("stage")
    assert out.index.tolist() == ["bm25", "pipeline:bm25"]
    assert out.loc["bm25", "p50_ms"] == 2.0 and out.loc["bm25", "p99_ms_max"] == 5.0
    assert out.loc["pipeline:bm25", "kind"] == "pipeline" and math.isnan(out.loc["pipeline:bm25", "p99_ms"])


def test_thin_curves_keeps_ends():
    curves = pd.DataFrame({"run_id": "r", "trial": "t", "group": "g", "status": "FINISHED", "metric": "train/loss",
                           "step": range(100), "value": np.arange(100.0)})
    thin, dropped = frames.thin_curves(curves, 10)
    assert len(thin) == 10 and dropped == 90 and thin["step"].iloc[0] == 0 and thin["step"].iloc[-1] == 99


def test_comparisons_parse_summary_metrics():
    out = frames.comparisons({"compare/g_b__vs__g_a/nDCG_10/p_value": 0.04, "compare/g_b__vs__g_a/nDCG_10/mean_diff":
                              0.01, "compare/g_b__vs__g_a/nDCG_10/effect_size": 0.3, "other": 1.0})
    assert out.values.tolist() == [["g_b", "g_a", "nDCG_10", 0.01, 0.3, 0.04]]


def test_svg_ids_are_prefixed_and_unique():
    t = _trials()
    a = plots.seed_spread(t, ["final_test/nDCG_10"])
    b = plots.knob_sweep(t, "alpha", ["final_test/nDCG_10"])
    assert a.startswith("<svg") and "<?xml" not in a
    ids_a, ids_b = re.findall(r'\bid="([^"]+)"', a), re.findall(r'\bid="([^"]+)"', b)
    assert ids_a and all(i.startswith("plot-seed-spread-") for i in ids_a)
    assert all(i.startswith("plot-vs-alpha-") for i in ids_b) and not set(ids_a) & set(ids_b)
    for ref in re.findall(r'(?:href="|url\()#([^"\)]+)', a):
        assert ref in ids_a
    assert "fill: #" in a  # colours untouched by the id rewrite


def test_short_labels():
    assert plots.short_labels(["s=random", "s=tasb"]) == (["random", "tasb"], "s")
    assert plots.short_labels(["a=1,k=5", "a=2,k=5"]) == (["1,\n5", "2,\n5"], "a, k")
    assert plots.short_labels(["base"]) == (["base"], "configuration group")
    assert plots.short_labels(["s=random", "s=tasb", "untrained"]) == (["random", "tasb", "untrained"], "s")


def test_header_label():
    assert header_label("final_test/nDCG_10") == "final_test/nDCG@10"
    assert header_label("final_test/MRR_10") == "final_test/MRR@10"
    assert header_label("R_100") == "R@100" and header_label("p50_ms") == "p50_ms"


def test_render_table_exact_values_and_failed_rows():
    df = pd.DataFrame({"run_id": ["x", "y"], "trial": ["a<b", "c"], "status": ["FINISHED", "FAILED"],
                       "seed": [1, 2], "final_test/nDCG_10": [0.123456789, math.nan]})
    html = render_table(Table("table-t", df, "cap", digits={"seed": None}))
    parsed, ids = parse(html)
    t = parsed["table-t"]
    assert ids["table-t"] == "table" and t.keys == ["trial", "status", "seed", "final_test/nDCG_10"]
    first, second = t.rows
    assert first.attrs["data-run-id"] == "x" and "class" not in first.attrs
    assert first.cells["trial"].text == "a<b"
    assert first.cells["final_test/nDCG_10"].value == "0.123456789" and first.cells["final_test/nDCG_10"].text == "0.1235"
    assert second.attrs["class"] == "failed" and second.cells["status"].text == "FAILED"
    assert second.cells["final_test/nDCG_10"].value is None
