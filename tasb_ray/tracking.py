"""Experiment tracking behind one small interface: the only module that imports MLflow.

The sweep driver, its Tune callback, the aggregation and the report talk to a :class:`Tracker`: create or find a run
by key, log params / metrics / artifacts, read runs and metric histories back. Another tracker (W&B, a plain
directory) means another class with these methods, not edits across the package. The tag names that make a sweep's
runs readable (``tasb.kind`` trial / aggregate / summary, ``tasb.group``, ...) are defined here once.

Before MLflow opens a URI it is checked cheaply, so a wrong store fails in one line: a text file given as
``sqlite:///x`` (else an SQLAlchemy traceback, or MLflow's tables added to someone else's database) and a refused
``http://`` server (else minutes of MLflow's retries). A reader (``Tracker(uri, read_only=True)``, as
``tasb-ray report`` opens a store) never creates or migrates a store: a SQLite store must already be an MLflow
database (checked with SQLite's read-only mode), and MLflow then opens a private copy of it, so the user's file
stays byte-identical whatever MLflow does on connect.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

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


SQLITE_HEADER = b"SQLite format 3\x00"
# Tables every MLflow SQL store has once created: ``experiments`` holds the data, ``alembic_version`` the schema.
MLFLOW_TABLES = ("experiments", "alembic_version")


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:`` URI (SQLAlchemy form: ``sqlite:///rel.db``, ``sqlite:////abs.db``); None when
    the URI is not SQLite or names an in-memory database."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri[len("sqlite:"):].split("?", 1)[0]
    if not rest.startswith("//"):
        raise TasbRayError(f"{uri}: not a SQLite URI (expected sqlite:///relative.db or sqlite:////absolute.db)")
    rest = rest[2:]
    # SQLAlchemy drops exactly one slash after '//': '/rel.db' is relative, '//abs.db' absolute.
    path = rest.removeprefix("/")
    if path in ("", ":memory:"):
        return None
    return Path(urllib.parse.unquote(path))


def _tables(path: Path) -> set[str]:
    # mode=ro: never create the file, never write to it (a check must not change the store it checks).
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        con = sqlite3.connect(uri, uri=True, timeout=5)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise TasbRayError(f"{path}: not a readable SQLite database ({e})") from None
    return {r[0] for r in rows}


def check_sqlite_store(uri: str, *, must_exist: bool) -> None:
    """Refuse a ``sqlite:`` tracking URI that MLflow could not use, with one line naming the file.

    ``must_exist=True`` (readers such as the report): the file must be an MLflow store already.
    ``must_exist=False`` (the sweep drivers, which create the store): a missing file is fine if its folder
    exists; an existing file must be SQLite, and either empty of tables or an MLflow store.
    Other URIs (``http:``, ``file:``, plain paths) pass unchecked.
    """
    path = sqlite_path(uri)
    if path is None:
        return
    if not path.exists():
        if must_exist:
            raise TasbRayError(f"no MLflow database at {path} (tracking URI {uri})")
        parent = path.parent if str(path.parent) else Path(".")
        if not parent.is_dir():
            raise TasbRayError(f"{path}: folder of the tracking store does not exist")
        return
    if path.is_dir():
        raise TasbRayError(f"{path}: tracking store is a directory, expected a SQLite file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except PermissionError:
        raise TasbRayError(f"{path}: permission denied") from None
    if head and head != SQLITE_HEADER:
        raise TasbRayError(f"{path}: not a SQLite database (tracking store); wrong file in --tracking-uri?")
    tables = _tables(path) if head else set()
    missing = [t for t in MLFLOW_TABLES if t not in tables]
    if missing and (must_exist or tables):
        what = "an empty SQLite file" if not tables else "a SQLite database"
        raise TasbRayError(f"{path}: {what} but not an MLflow tracking store (no table "
                           f"{', '.join(repr(t) for t in missing)})")


def check_remote_store(uri: str, timeout_s: float = 5.0) -> None:
    """One bounded reachability probe of an ``http(s)://`` tracking server; other URIs pass unchecked.

    Any HTTP answer (even 404 or 403) means a server is there: MLflow reports what it does not like later, with
    its own message. Only a failed connection (refused, unknown host, no answer within ``timeout_s``) is refused.
    """
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(urllib.request.Request(uri, method="GET"), timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            reason = f"no answer within {timeout_s:g} s"
        raise TasbRayError(f"{uri}: tracking server not reachable ({reason})") from None
    except TimeoutError:
        raise TasbRayError(f"{uri}: tracking server not reachable (no answer within {timeout_s:g} s)") from None
    except (ConnectionError, OSError) as e:
        raise TasbRayError(f"{uri}: tracking server not reachable ({e})") from None


def check_tracking_store(uri: str, *, must_exist: bool, timeout_s: float = 5.0) -> None:
    """Both checks by scheme: what a driver or the report calls before handing ``uri`` to MLflow."""
    check_sqlite_store(uri, must_exist=must_exist)
    check_remote_store(uri, timeout_s)


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
        check_tracking_store(self.uri, must_exist=self.read_only)
        path = sqlite_path(self.uri)
        if path is not None:
            if self.read_only:
                self._copy_dir = tempfile.mkdtemp(prefix="tasb-ray-store-")
                copy = Path(self._copy_dir) / path.name
                shutil.copyfile(path, copy)
                return f"sqlite:///{copy}"
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
