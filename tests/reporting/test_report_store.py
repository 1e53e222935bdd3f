"""``tasb-ray report`` only reads: it never creates, migrates or writes a store it is pointed at."""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import time

import pytest

from tasb_ray.cli import main
from tasb_ray.errors import TasbRayError
from tasb_ray.tracking import Tracker, check_remote_store


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _report(capsys, uri: str, out) -> tuple[int, str]:
    rc = main(["report", "--experiment", "seeds", "--tracking-uri", uri, "--out", str(out)])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("kind", ["empty", "foreign-sqlite", "text"])
def test_report_leaves_a_non_mlflow_file_byte_identical(tmp_path, capsys, kind):
    store = tmp_path / "store.db"
    if kind == "empty":
        store.write_bytes(b"")
    elif kind == "text":
        store.write_text("not a database\n")
    else:
        con = sqlite3.connect(store)
        con.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        con.execute("INSERT INTO notes (body) VALUES ('keep me')")
        con.commit()
        con.close()
    before = _digest(store)
    rc, err = _report(capsys, f"sqlite:///{store}", tmp_path / "r.html")
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert str(store) in err and ("not an MLflow tracking store" in err or "not a SQLite database" in err)
    assert _digest(store) == before
    assert not (tmp_path / "r.html").exists()


def test_report_on_a_missing_store_creates_nothing(tmp_path, capsys):
    rc, err = _report(capsys, f"sqlite:///{tmp_path / 'absent.db'}", tmp_path / "r.html")
    assert rc == 2 and "no MLflow database" in err
    assert list(tmp_path.iterdir()) == []


def test_reading_a_real_store_leaves_it_byte_identical(sweep_store, tmp_path, capsys):
    db = sweep_store.root / "mlflow.db"
    before = _digest(db)
    rc = main(["report", "--experiment", "seeds", "--tracking-uri", sweep_store.uri, "--out", str(tmp_path / "r.html")])
    assert rc == 0, capsys.readouterr().err
    assert _digest(db) == before


def test_read_only_tracker_refuses_writes(sweep_store):
    tracker = Tracker(sweep_store.uri, read_only=True)
    try:
        exp = tracker.experiment_id("seeds")
        assert exp is not None and tracker.runs(exp)
        with pytest.raises(TasbRayError, match="read-only"):
            tracker.create_run(exp, "x", {})
    finally:
        tracker.close()


def test_unreachable_tracking_server_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(TasbRayError, match=f"http://127.0.0.1:{port}: tracking server not reachable"):
        check_remote_store(f"http://127.0.0.1:{port}", timeout_s=5)
    assert time.monotonic() - t0 < 10
