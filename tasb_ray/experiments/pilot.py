"""The pilot workflow: from a small sweep's per-query results, how many queries and seeds an effect needs.

    python experiments/power.py --run-dir runs/sweeps/pilot --effect 0.01

Reads ``<run_dir>/results/per_query.parquet`` and ``comparisons.csv`` (written by every sweep) and prints, per
comparison and measure, what the queries and seeds at hand detect at 80% power and how many of each would detect
``--effect`` (formulas in :mod:`tasb_ray.experiments.significance`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from tasb_ray.errors import TasbRayError, run_guarded
from tasb_ray.experiments.recompare import sweep_results
from tasb_ray.experiments.reference import REFERENCE_GROUP
from tasb_ray.experiments.significance import ALPHA, POWER, power_plan


def pilot_plan(run_dir: Path, effect: float, split: str = "test", measures: list[str] | None = None,
               alpha: float = ALPHA, power: float = POWER) -> pd.DataFrame:
    """The power plan of the sweep in ``run_dir`` for ``effect`` on ``split`` (see :func:`power_plan`)."""
    if effect <= 0:
        raise TasbRayError(f"--effect must be > 0, got {effect}")
    pq, comp = sweep_results(run_dir, split)
    pairs = list(dict.fromkeys(zip(comp["group"], comp["baseline"])))
    measures = measures or list(dict.fromkeys(comp["measure"]))
    return power_plan(pq, pairs, measures, effect, alpha, power, reference=REFERENCE_GROUP)


def format_plan(plan: pd.DataFrame) -> str:
    def f(v, spec):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    cols = ["group", "against", "measure", "queries", "seeds", "sd_diff", "mde_queries", "queries_needed",
            "sd_seed", "mde_seeds", "seeds_needed"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in plan.to_dict("records"):
        cells = [r["group"], r["against"], r["measure"], str(r["queries"]), f"{r['seeds_a']}/{r['seeds_b']}",
                 f(r["sd_diff"], ".4f"), f(r["mde_queries"], ".4f"), f(r["queries_needed"], ".0f"),
                 f"{f(r['sd_seed_a'], '.4f')}/{f(r['sd_seed_b'], '.4f')}", f(r["mde_seeds"], ".4f"),
                 f(r["seeds_needed"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, prog: str = "experiments/power.py") -> int:
    p = argparse.ArgumentParser(prog=prog, description="Queries and seeds needed to detect an effect, from a pilot "
                                "sweep's per-query results.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--run-dir", required=True, type=Path, help="the pilot sweep's run directory")
    p.add_argument("--effect", required=True, type=float, help="the mean difference to detect (e.g. 0.01 nDCG@10)")
    p.add_argument("--split", default="test", help="split of the per-query values")
    p.add_argument("--measure", dest="measures", action="append", default=None,
                   help="measure(s) to plan for (default: the sweep's compare metrics)")
    p.add_argument("--alpha", type=float, default=ALPHA, help="two-sided significance level")
    p.add_argument("--power", type=float, default=POWER, help="power")
    args = p.parse_args(argv)
    plan, code = run_guarded(prog, lambda: pilot_plan(args.run_dir, args.effect, args.split, args.measures,
                                                      args.alpha, args.power))
    if code is not None:
        return code
    print(f"## power plan: effect {args.effect:g}, alpha {args.alpha:g}, power {args.power:g}, {args.split} split\n")
    print(format_plan(plan))
    print("queries: paired test over queries, each query averaged over the seeds at hand: "
          "n = ceil(((z(1-a/2) + z(power)) * sd_diff / effect)^2).")
    print("seeds: two groups' means over seeds, r seeds each: r = ceil((z(1-a/2) + z(power))^2 * "
          "(sd_seed_a^2 + sd_seed_b^2) / effect^2); the untrained reference has no seed variance.")
    print("mde_*: the smallest difference the queries / seeds at hand detect. An effect is detectable only "
          "when both the queries and the seeds suffice.")
    return 0
