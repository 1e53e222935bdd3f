"""A finished sweep's paired comparisons, computed again from its per-query results with today's statistics.

    python experiments/compare.py --run-dir runs/sweeps/nfcorpus-compare

Reads ``<run_dir>/results/per_query.parquet`` and ``comparisons.csv`` (for the groups, the baseline and the
measures the sweep compared) and prints the comparisons table (:func:`tasb_ray.experiments.robustness.compare_groups`)
as Markdown. Nothing in the run directory is rewritten: a table added to the statistics since the sweep ran (e.g.
the seed-level test ``p_seeds``) shows up here without rerunning a trial.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from tasb_ray.errors import TasbRayError, run_guarded
from tasb_ray.experiments.reference import REFERENCE_GROUP
from tasb_ray.experiments.robustness import compare_groups, comparisons_table
from tasb_ray.tables import markdown_table


def sweep_results(run_dir: Path, split: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished sweep's per-query values on ``split`` and its comparisons table (one-line errors when missing)."""
    results = Path(run_dir) / "results"
    pq_path, comp_path = results / "per_query.parquet", results / "comparisons.csv"
    for path in (pq_path, comp_path):
        if not path.is_file():
            raise TasbRayError(f"{path}: not found (is {run_dir} a finished sweep's run directory?)")
    pq = pd.read_parquet(pq_path)
    pq = pq[pq["split"] == split]
    if pq.empty:
        raise TasbRayError(f"{pq_path}: no per-query values for split {split!r}")
    comp = pd.read_csv(comp_path)
    if comp.empty:
        raise TasbRayError(f"{comp_path}: no comparisons (a sweep with one group has nothing to compare)")
    return pq, comp


def recompare(run_dir: Path, split: str = "test") -> pd.DataFrame:
    """The comparisons of the sweep in ``run_dir`` on ``split``, recomputed (same groups, baseline, measures)."""
    pq, comp = sweep_results(run_dir, split)
    # The baseline group; a sweep of one trained group compared it with the untrained reference only.
    baselines = [b for b in dict.fromkeys(comp["baseline"]) if b != REFERENCE_GROUP]
    baseline = baselines[0] if baselines else comp["group"].iloc[0]
    reference = REFERENCE_GROUP if REFERENCE_GROUP in set(comp["baseline"]) else None
    return compare_groups(pq, baseline, list(dict.fromkeys(comp["measure"])), reference=reference)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", type=Path, required=True, help="a finished sweep's run directory")
    p.add_argument("--split", default="test", help="the query split the comparisons are paired over")
    args = p.parse_args(argv)
    out, code = run_guarded("compare.py", lambda: recompare(args.run_dir, args.split))
    if code is not None:
        return code
    print(markdown_table(comparisons_table(out)), end="")
    return 0
