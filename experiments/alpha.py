"""Sensitivity to alpha, the weight of the in-batch Margin-MSE (alpha = 0 turns the in-batch teacher off).

    python experiments/alpha.py                  # SciFact, alpha in {0, 0.75}, 3 seeds
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python experiments/alpha.py --run-dir $PWD/runs/sweeps/alpha
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasb_ray.experiments.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("experiments/alpha.py", __doc__.strip().splitlines()[0], HERE / "configs" / "alpha-scifact.yaml"))
