"""MLflow tracking of a sweep, written from the driver only.

Trials report to Ray Tune; a Tune callback in the driver turns those reports into MLflow runs. Trials
never talk to MLflow, so they need neither network access to the tracking server nor the SQLite file,
and a fresh SQLite database is never raced by concurrent trials creating its tables (see STACK.md).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from tasb_ray.errors import TasbRayError

log = logging.getLogger(__name__)

KIND_TAG = "tasb.kind"          # trial | aggregate | summary
GROUP_TAG = "tasb.group"
TRIAL_TAG = "tasb.trial_key"
TUNE_ID_TAG = "tasb.trial_id"
SWEEP_TAG = "tasb.sweep"
METRIC_PREFIXES = ("train/", "dev/", "final_dev/", "final_test/", "pipeline/", "latency/")
ARTIFACTS = ("config.yaml", "results.json", "pipeline.md", "metrics.jsonl", "runs/test.trec", "runs/dev.trec")


def metric_key(name: str) -> str:
    """An MLflow-valid key: ``nDCG@10`` → ``nDCG_10`` (MLflow allows only [/\\w.\\- :])."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_"))


def resolve_tracking_uri(uri: str | None, run_dir: Path) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite database in the run directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def ensure_experiment(tracking_uri: str, name: str, artifact_dir: Path | None = None) -> str:
    """Create (or find) the experiment from the driver before any trial runs; returns its id.

    With a local SQLite store, artifacts go to ``artifact_dir`` instead of ``./mlruns`` under the current
    directory, so the sweep's run directory holds everything.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise TasbRayError(f"MLflow experiment {name!r} is deleted; restore it or choose another sweep name")
        return exp.experiment_id
    location = None
    if artifact_dir is not None and tracking_uri.startswith("sqlite:"):
        artifact_dir.mkdir(parents=True, exist_ok=True)
        location = artifact_dir.resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


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


def numeric_metrics(values: Mapping[str, Any], prefixes: Iterable[str] = METRIC_PREFIXES) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        if k.startswith(tuple(prefixes)) and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isnan(float(v)):
                out[metric_key(k)] = float(v)
    return out


def log_params(client, run_id: str, params: Mapping[str, Any]) -> None:
    """Params in batches of 100 (MLflow's limit), values as strings capped at MLflow's 6000 characters."""
    from mlflow.entities import Param

    items = [Param(metric_key(k), (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def log_metrics(client, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if math.isfinite(float(v))]
    for i in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[i:i + 1000])


def find_run(client, experiment_id: str, tag: str, value: str):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
    return runs[0] if runs else None


def log_trial_artifacts(client, run_id: str, final_dir: Path) -> None:
    for rel in ARTIFACTS:
        path = final_dir / rel
        if path.is_file():
            parent = str(Path(rel).parent)
            client.log_artifact(run_id, str(path), None if parent == "." else parent)
