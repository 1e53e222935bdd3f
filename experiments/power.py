"""How many queries and seeds would detect an effect, from a pilot sweep (e.g. 2 seeds).

    python experiments/seeds.py --quick --run-dir runs/sweeps/pilot      # or any sweep
    python experiments/power.py --run-dir runs/sweeps/pilot --effect 0.01
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing

from tasb_ray.experiments.pilot import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
