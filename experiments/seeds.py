"""Robustness across random seeds: TAS-Balanced vs random batch composition, several seeds each.

    python experiments/seeds.py                  # SciFact, all-MiniLM-L6-v2, 3 seeds x {tas-balanced, random}
    python experiments/seeds.py --quick          # the <= 20 min demo on 2 CPU cores (see the README)
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python experiments/seeds.py --run-dir $PWD/runs/sweeps/seeds
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout (or a Ray job's working dir) without installing

from tasb_ray.experiments.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("experiments/seeds.py", __doc__.strip().splitlines()[0], HERE / "configs" / "seeds-scifact.yaml",
                  HERE / "configs" / "seeds-scifact-quick.yaml"))
