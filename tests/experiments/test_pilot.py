"""The pilot workflow's command line on a synthetic 2-seed pilot with a known per-query sd."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tasb_ray.experiments.pilot import main, pilot_plan
from tasb_ray.experiments.significance import z_sum


def _pilot(run_dir, n=300, sd=0.1):
    rng = np.random.default_rng(5)
    base = rng.uniform(0.3, 0.7, n)
    rows = []
    for group, seeds, shift in (("tas", 2, 0.01), ("random", 2, 0.0), ("untrained", 1, -0.02)):
        for s in range(seeds):
            noise = rng.normal(0, sd, n) if seeds > 1 else np.zeros(n)
            for q in range(n):
                for split in ("dev", "test"):
                    rows.append({"group": group, "trial": f"{group}{s}", "split": split, "query_id": f"q{q}",
                                 "measure": "nDCG@10", "value": base[q] + shift + noise[q]})
    (run_dir / "results").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(run_dir / "results" / "per_query.parquet")
    pd.DataFrame({"group": ["tas", "tas", "random"], "baseline": ["random", "untrained", "untrained"],
                  "measure": ["nDCG@10"] * 3}).to_csv(run_dir / "results" / "comparisons.csv", index=False)


def test_pilot_prints_queries_and_seeds_needed(tmp_path, capsys):
    _pilot(tmp_path)
    plan = pilot_plan(tmp_path, 0.01)
    assert list(zip(plan["group"], plan["against"])) == [("tas", "random"), ("tas", "untrained"),
                                                         ("random", "untrained")]
    row = plan.iloc[0]
    # Two seeds of independent N(0, 0.1) noise averaged per group: the per-query sd of differences is ~0.1.
    assert 0.09 < row["sd_diff"] < 0.11
    assert row["queries_needed"] == math.ceil((z_sum() * row["sd_diff"] / 0.01) ** 2)
    assert main(["--run-dir", str(tmp_path), "--effect", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "| tas | random | nDCG@10 | 300 | 2/2 |" in out and f"| {row['queries_needed']:.0f} |" in out


def test_pilot_errors_are_one_line(tmp_path, capsys):
    assert main(["--run-dir", str(tmp_path), "--effect", "0.01"]) == 2
    assert "per_query.parquet: not found" in capsys.readouterr().err
