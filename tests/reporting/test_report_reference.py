"""A sweep with the untrained reference, loss terms and batch-plan statistics: the answer first, then the rest."""

from __future__ import annotations

import pytest
from conftest import FULL_STATS, REFERENCE_VALUES
from dom import parse

from tasb_ray.reporting import collect, frames
from tasb_ray.reporting.collect import collect_sweep
from tasb_ray.reporting.report import render_report


@pytest.fixture(scope="module")
def ref_data(sweep_store):
    return collect_sweep("seeds-ref", sweep_store.uri)


@pytest.fixture(scope="module")
def ref_html(ref_data):
    return render_report(ref_data, generated="now")


def test_collect_reads_reference_loss_terms_and_plan(ref_data):
    assert ref_data.reference == "untrained" and ref_data.baseline == "sampler.sampling=random"
    # started first, listed last; not a knob value
    assert list(ref_data.trials["group"]) == ["sampler.sampling=random"] * 2 + ["sampler.sampling=tasb"] * 2 + [
        "untrained"]
    assert ref_data.knobs == ["sampler.sampling"] and len(ref_data.trained) == 4
    assert set(ref_data.curves["metric"]) == {"dev/nDCG_10", "train/loss", "train/loss_pair", "train/loss_inbatch"}
    assert {"train/loss_ratio", "train/margin_sd_pair"} <= set(collect.CURVE_METRICS)
    assert "plan/single_cluster_share" in ref_data.trials.columns


def test_report_opens_with_the_answer(ref_html):
    tables, ids = parse(ref_html)
    assert ref_html.index('id="sec-answer"') < ref_html.index('<dl class="meta">')
    rows = tables["table-answer"].rows
    got = [(r.cells["group"].text, r.cells["against"].text, r.cells["measure"].text) for r in rows]
    assert got == [("sampler.sampling=tasb", "sampler.sampling=random", "nDCG_10"),
                   ("sampler.sampling=tasb", "sampler.sampling=random", "R_100"),
                   ("sampler.sampling=random", "untrained", "nDCG_10"),
                   ("sampler.sampling=random", "untrained", "R_100"),
                   ("sampler.sampling=tasb", "untrained", "nDCG_10"),
                   ("sampler.sampling=tasb", "untrained", "R_100")]
    first = rows[0].cells
    assert float(first["difference"].value) == pytest.approx(FULL_STATS["mean_diff"])
    for col in ("ci95_low", "ci95_high", "p_holm", "p_perm_holm", "mde_queries", "mde_seeds"):
        assert float(first[col].value) == FULL_STATS[col], col
    assert "reference" in ref_html[ref_html.index('<dl class="meta">'):ref_html.index("</dl>")]


def test_reference_is_a_line_a_row_and_a_table(ref_data, ref_html):
    tables, _ = parse(ref_html)
    start = ref_html.index('<figure id="plot-training-curves">')
    curves = ref_html[start:ref_html.index("</figure>", start)]
    assert "untrained" in curves and "train loss_pair" in curves and "train loss_inbatch" in curves
    assert "Dotted line: the untrained student" in curves
    spread = tables["table-seed-spread"]
    ref = next(r for r in spread.rows if r.cells["group"].text == "untrained"
               and r.cells["metric"].text == "final_test/nDCG_10")
    assert float(ref.cells["mean"].value) == REFERENCE_VALUES["nDCG_10"] and ref.cells["n"].text == "1"
    plan = tables["table-plan"]
    assert [r.cells["group"].text for r in plan.rows] == ["sampler.sampling=random", "sampler.sampling=tasb"]
    assert float(plan.rows[1].cells["single_cluster_share"].value) == 0.8
    # no knob section is drawn from the reference's own params
    assert "plot-vs-alpha" not in ref_html


def test_answer_without_reference_or_new_stats():
    old = {"compare/g_b__vs__g_a/nDCG_10/p_value": 0.04, "compare/g_b__vs__g_a/nDCG_10/mean_diff": 0.01}
    table = frames.answer(old, ["g_a", "g_b"], "g_a", None)
    assert table["difference"].tolist() == [0.01] and table["p_holm"].isna().all()
    assert frames.plan_stats(frames.pd.DataFrame({"group": ["a"], "status": ["FINISHED"]})).empty
