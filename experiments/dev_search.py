"""Grid search on dev in one process (no Ray, no MLflow): pick training settings on dev only.

    python experiments/dev_search.py experiments/configs/scifact.yaml \\
        --grid optim.lr=3e-5,6e-5,1e-4 --grid seed=0,1 --run-dir runs/search/lr
    # then compare samplers at the best settings, now with test metrics:
    python experiments/dev_search.py experiments/configs/scifact.yaml --best-of runs/search/lr/summary.json \\
        --grid sampler.sampling=random,tas,tas-balanced --grid seed=0,1,2 --test --run-dir runs/search/compare

Each grid point trains with `tasb-ray train`'s code path; finished points are read back, so re-running the same
command continues an interrupted search. Writes RUN_DIR/search.jsonl, summary.json and summary.md (mean ± sd
over seeds per group, best on dev marked). The Ray Tune sweeps (seeds.py, alpha.py, clusters.py) track the same
in MLflow at scale.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasb_ray.errors import TasbRayError, run_guarded  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="experiments/dev_search.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("config", metavar="CONFIG.yaml", help="training config (see experiments/configs/)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (repeatable; the cartesian product is searched)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value for every grid point")
    p.add_argument("--best-of", default=None, metavar="SUMMARY.json",
                   help="start from the best group's settings of an earlier search")
    p.add_argument("--test", action="store_true", help="also evaluate on test (never use it to pick settings)")
    p.add_argument("--run-dir", default=None, help="where trials and the summary go (default: runs/search/NAME)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from tasb_ray.config import apply_overrides, load_yaml
    from tasb_ray.experiments.search import best_values, parse_grid, run_search
    from tasb_ray.experiments.grid import apply_values

    def search():
        grid = parse_grid(args.grid)
        if not grid:
            raise TasbRayError("give at least one --grid KEY=V1,V2")
        base = load_yaml(args.config)
        if args.best_of:
            base = apply_values(base, best_values(args.best_of))
        base = apply_overrides(base, args.overrides)
        name = base.get("name", Path(args.config).stem)
        run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / "search" / name
        return run_dir, run_search(base, grid, run_dir, name=name, test=args.test)

    out, code = run_guarded(p.prog, search, "interrupted: re-run the same command to continue")
    if code is not None:
        return code
    run_dir, result = out
    print((run_dir / "summary.md").read_text(), end="")
    print(f"best on dev: {result.best.get('group')}  ({run_dir / 'summary.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
