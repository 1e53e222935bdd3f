"""Experiment tracking behind one small interface: the only module that imports MLflow.

The sweep driver, its Tune callback, the aggregation and the report talk to a :class:`Tracker`: create or find a run
by key, log params / metrics / artifacts, read runs and metric histories back. Another tracker (W&B, a plain
directory) means another class with these methods, not edits across the package. The tag names that make a sweep's
runs readable (``tasb.kind`` trial / aggregate / summary, ``tasb.group``, ...) are defined here once.

A reader (``Tracker(uri, read_only=True)``, as ``tasb-ray report`` opens a store) never creates or migrates a
store: a SQLite store must already be an MLflow database (checked read-only), and MLflow then opens a private copy
of it, so the user's file stays byte-identical whatever MLflow does on connect.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlparse

from tasb_ray.errors import TasbRayError

KIND_TAG = "tasb.kind"          # trial | aggregate | summary
GROUP_TAG = "tasb.group"
TRIAL_TAG = "tasb.trial_key"
TUNE_ID_TAG = "tasb.trial_id"
SWEEP_TAG = "tasb.sweep"
RETRIES_TAG = "tasb.retries"
# The driver tags each trial with its sweep key; the Tune id and the run name are fallbacks for other writers.
TRIAL_LABEL_TAGS = (TRIAL_TAG, TUNE_ID_TAG)
FINISHED, FAILED, RUNNING = "FINISHED", "FAILED", "RUNNING"
PAGE = 1000
REMOTE_TIMEOUT_S = 10.0
# MLflow's own client retries a refused HTTP connection for minutes; these bound it (read by mlflow at request time).
_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
             "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def metric_key(name: str) -> str:
    """An MLflow-valid key: ``nDCG@10`` → ``nDCG_10`` (MLflow allows only [/\\w.\\- :])."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("@", "_"))


def resolve_tracking_uri(uri: str | None, run_dir: Path) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite database in the run directory."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current directory (the sweep's run-directory layout)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (``sqlite:///rel.db`` relative, ``sqlite:////abs.db`` absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///"):].split("?", 1)[0])
    return None if not path or path == ":memory:" else Path(path)


def check_sqlite_store(path: Path, uri: str, must_exist: bool) -> bool:
    """Whether ``path`` holds an MLflow SQLite store (read-only look); raise if it holds anything else.

    With ``must_exist`` a missing file raises too. An empty file, a non-SQLite file or a SQLite database without
    MLflow's tables is refused: MLflow would otherwise turn it into (or add its tables to) a tracking store.
    """
    if not path.exists():
        if must_exist:
            raise TasbRayError(f"no MLflow database at {path} (tracking URI {uri})")
        return False
    if path.is_dir():
        raise TasbRayError(f"{path}: is a directory, not an MLflow SQLite database (tracking URI {uri})")
    try:
        with open(path, "rb") as f:
            header = f.read(16)
    except OSError as e:
        raise TasbRayError(f"{path}: cannot read the tracking store: {e.strerror or e}") from None
    if header != b"SQLite format 3\x00":
        what = "an empty file" if not header else "not a SQLite database"
        raise TasbRayError(f"{path}: {what}, not an MLflow tracking store (tracking URI {uri})")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error as e:
        raise TasbRayError(f"{path}: unreadable SQLite database ({e})") from None
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise TasbRayError(f"{path}: a SQLite database without MLflow's tables, not an MLflow tracking store "
                           f"(tracking URI {uri})")
    return True


def check_remote_store(uri: str, timeout_s: float = REMOTE_TIMEOUT_S) -> None:
    """One bounded reachability probe of an ``http(s)://`` tracking server: fail in seconds, in one line."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered: a server is there (its /health may be elsewhere)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise TasbRayError(f"tracking server {uri} unreachable: {reason}") from None


@dataclass
class RunRecord:
    """A run as read back: identity, status, tags, params and the latest value of each metric."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _record(run) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.run_name or "", run.info.status, int(run.info.start_time or 0),
                     dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))


class Tracker:
    """An MLflow store (SQLite file or tracking server) with the operations tasb-ray needs.

    Args:
        uri: the tracking URI.
        read_only: open an existing store for reading only (see the module docstring); writing methods raise.
    """

    def __init__(self, uri: str, read_only: bool = False):
        self.uri = uri
        self.read_only = read_only
        self._client = None
        self._copy_dir: str | None = None

    def __getstate__(self):  # pickled with the Tune callback: the client is made again where it is unpickled
        return {"uri": self.uri, "read_only": self.read_only, "_client": None, "_copy_dir": None}

    @property
    def client(self):
        if self._client is None:
            # mlflow is imported on first use: importing it costs ~2 s, and trials and most commands never need it.
            from mlflow.tracking import MlflowClient

            for k, v in _HTTP_ENV.items():
                os.environ.setdefault(k, v)
            self._client = MlflowClient(self._open_uri())
        return self._client

    def _open_uri(self) -> str:
        path = sqlite_path(self.uri)
        if path is not None:
            exists = check_sqlite_store(path, self.uri, must_exist=self.read_only)
            if self.read_only and exists:
                self._copy_dir = tempfile.mkdtemp(prefix="tasb-ray-store-")
                copy = Path(self._copy_dir) / path.name
                shutil.copyfile(path, copy)
                return f"sqlite:///{copy}"
        else:
            check_remote_store(self.uri)
        return self.uri

    def close(self) -> None:
        if self._copy_dir is not None:
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            self._copy_dir = None
        self._client = None

    def _writable(self) -> None:
        if self.read_only:
            raise TasbRayError(f"tracking store {self.uri} was opened read-only")

    def _call(self, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException  # lazy: see Tracker.client

        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            raise TasbRayError(f"MLflow at {self.uri}: {str(e).splitlines()[0]}") from e

    # --- experiments -------------------------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str | None:
        """The id of a live experiment called ``name``, else None."""
        exp = self._call(self.client.get_experiment_by_name, name)
        return None if exp is None or exp.lifecycle_stage == "deleted" else exp.experiment_id

    def experiment_names(self, limit: int = 50) -> list[str]:
        return sorted(e.name for e in self._call(self.client.search_experiments, max_results=limit))

    def ensure_experiment(self, name: str, artifact_dir: Path | None = None) -> str:
        """Create (or find) the experiment; with a local SQLite store, artifacts go to ``artifact_dir``."""
        self._writable()
        exp = self._call(self.client.get_experiment_by_name, name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise TasbRayError(f"MLflow experiment {name!r} is deleted; restore it or choose another sweep name")
            return exp.experiment_id
        location = None
        if artifact_dir is not None and self.uri.startswith("sqlite:"):
            artifact_dir.mkdir(parents=True, exist_ok=True)
            location = artifact_dir.resolve().as_uri()
        return self._call(self.client.create_experiment, name, artifact_location=location)

    # --- runs --------------------------------------------------------------------------------------------------

    def runs(self, experiment_id: str, kind: str | None = None, oldest_first: bool = True) -> list[RunRecord]:
        """Every run of the experiment (or of one ``tasb.kind``), by start time."""
        flt = f"tags.`{KIND_TAG}` = '{kind}'" if kind else ""
        order = ["attributes.start_time " + ("ASC" if oldest_first else "DESC")]
        out, token = [], None
        while True:
            page = self._call(self.client.search_runs, [experiment_id], filter_string=flt, max_results=PAGE,
                              order_by=order, page_token=token)
            out.extend(_record(r) for r in page)
            token = page.token
            if not token:
                return out

    def find_run(self, experiment_id: str, tag: str, value: str) -> RunRecord | None:
        runs = self._call(self.client.search_runs, [experiment_id], filter_string=f"tags.`{tag}` = '{value}'",
                          max_results=1)
        return _record(runs[0]) if runs else None

    def run(self, run_id: str) -> RunRecord:
        return _record(self._call(self.client.get_run, run_id))

    def create_run(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> str:
        self._writable()
        return self._call(self.client.create_run, experiment_id, run_name=name, tags=dict(tags)).info.run_id

    def set_status(self, run_id: str, status: str) -> None:
        self._writable()
        self._call(self.client.update_run, run_id, status=status)

    def finish(self, run_id: str, status: str = FINISHED) -> None:
        self._writable()
        self._call(self.client.set_terminated, run_id, status)

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._writable()
        self._call(self.client.set_tag, run_id, key, value)

    def delete_run(self, run_id: str) -> None:
        self._writable()
        self._call(self.client.delete_run, run_id)

    # --- logging -----------------------------------------------------------------------------------------------

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params in batches of 100 (MLflow's limit), values as strings capped at MLflow's 6000 characters."""
        from mlflow.entities import Param  # lazy: see Tracker.client

        self._writable()
        items = [Param(metric_key(k), (v if isinstance(v, str) else json.dumps(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Finite values only, in batches of 1000 (MLflow's limit)."""
        from mlflow.entities import Metric  # lazy: see Tracker.client

        self._writable()
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items() if math.isfinite(float(v))]
        for i in range(0, len(items), 1000):
            self._call(self.client.log_batch, run_id, metrics=items[i:i + 1000])

    def log_artifact(self, run_id: str, path: str | os.PathLike, subdir: str | None = None) -> None:
        self._writable()
        self._call(self.client.log_artifact, run_id, str(path), subdir)

    def artifact_paths(self, run_id: str) -> list[str]:
        return [a.path for a in self._call(self.client.list_artifacts, run_id)]

    def metric_history(self, run_id: str, metric: str) -> list[tuple[int, float]]:
        return [(int(m.step), float(m.value)) for m in self._call(self.client.get_metric_history, run_id, metric)]

    def logged_steps(self, run_id: str) -> set[tuple[str, int]]:
        """Every (metric, step) the run holds."""
        out: set[tuple[str, int]] = set()
        for metric in self.run(run_id).metrics:
            out.update((metric, step) for step, _ in self.metric_history(run_id, metric))
        return out


def numeric_metrics(values: Mapping[str, Any], prefixes: Iterable[str]) -> dict[str, float]:
    """The finite numbers among ``values`` whose key starts with one of ``prefixes``, under MLflow-valid keys."""
    out = {}
    for k, v in values.items():
        if k.startswith(tuple(prefixes)) and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isnan(float(v)):
                out[metric_key(k)] = float(v)
    return out
