"""Sensitivity to the number of query clusters k of topic-aware sampling (clustering runs once per k).

    python experiments/clusters.py               # SciFact, k in {4, 16, 64}, 3 seeds
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python experiments/clusters.py --run-dir $PWD/runs/sweeps/clusters
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tasb_ray.experiments.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main("experiments/clusters.py", __doc__.strip().splitlines()[0],
                  HERE / "configs" / "clusters-scifact.yaml"))
