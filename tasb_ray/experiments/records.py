"""What a sweep records about its trials beyond the metrics: the code's commit and each trial's artifact files.

Trials report to Ray Tune; a Tune callback in the driver turns those reports into tracker runs
(:mod:`tasb_ray.tracking`). Trials never talk to the tracking store, so they need neither network access to a
tracking server nor the SQLite file, and a fresh SQLite database is never raced by concurrent trials creating its
tables (see STACK.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tasb_ray.tracking import Tracker

PLACEMENT_PREFIX = "placement/"   # what a trial saw of its resources (GPU ids, CUDA_VISIBLE_DEVICES, device)
METRIC_PREFIXES = ("train/", "dev/", "final_dev/", "final_test/", "pipeline/", "latency/", "plan/", "clusters/")
ARTIFACTS = ("config.yaml", "results.json", "pipeline.md", "metrics.jsonl", "runs/test.trec", "runs/dev.trec")


def git_commit() -> str:
    """The commit of the code being run: ``$TASB_RAY_GIT_COMMIT`` (set by the driver for jobs), else git, else unknown."""
    env = os.environ.get("TASB_RAY_GIT_COMMIT")
    if env:
        return env
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def log_trial_artifacts(tracker: Tracker, run_id: str, final_dir: Path) -> None:
    """The trial's files (config, results, metrics history, run files) as artifacts of its run."""
    for rel in ARTIFACTS:
        path = final_dir / rel
        if path.is_file():
            parent = str(Path(rel).parent)
            tracker.log_artifact(run_id, path, None if parent == "." else parent)
