"""A finished sweep's paired comparisons, recomputed from its per-query results with today's statistics.

    python experiments/compare.py --run-dir runs/sweeps/nfcorpus-compare
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from tasb_ray.experiments.recompare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
