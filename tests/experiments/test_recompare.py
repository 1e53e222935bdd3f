"""experiments/compare.py: a finished sweep's comparisons recomputed from its saved per-query results."""

from __future__ import annotations

import pandas as pd
import pytest

from tasb_ray.experiments.recompare import main, recompare


def test_recompare_gives_the_sweeps_own_comparisons(tiny_sweep, capsys):
    run_dir = tiny_sweep.result.run_dir
    again = recompare(run_dir)
    saved = pd.read_csv(run_dir / "results" / "comparisons.csv")
    assert list(zip(again["group"], again["baseline"], again["measure"])) == \
        list(zip(saved["group"], saved["baseline"], saved["measure"]))
    for col in ("mean_diff", "ci95_low", "p_value", "p_perm", "p_holm", "mde_queries", "mde_seeds"):
        assert again[col].tolist() == pytest.approx(saved[col].tolist(), nan_ok=True), col
    assert "p_seeds" in again and "p_seeds_holm" in again
    assert main(["--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| group | baseline | measure |") and "p_seeds" in out


def test_recompare_of_a_directory_without_results_is_one_line(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "per_query.parquet: not found" in err
