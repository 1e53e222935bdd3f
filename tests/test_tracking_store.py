"""Tracking-store checks: a wrong sqlite file or a refused server is one line, in seconds, before MLflow opens it."""

from __future__ import annotations

import http.server
import socket
import sqlite3
import threading
import time

import pytest

from tasb_ray.errors import TasbRayError
from tasb_ray.tracking import check_remote_store, check_sqlite_store, check_tracking_store, sqlite_path


def _uri(path) -> str:
    return f"sqlite:///{path}"  # an absolute path gives the four-slash form


def _mlflow_like(path):
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("CREATE TABLE alembic_version (version_num TEXT)")
    con.commit()
    con.close()
    return path


def test_sqlite_path_forms():
    assert str(sqlite_path("sqlite:////abs/mlflow.db")) == "/abs/mlflow.db"
    assert str(sqlite_path("sqlite:///rel/mlflow.db")) == "rel/mlflow.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("http://x") is None


def test_text_file_is_refused_and_left_unchanged(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 10)
    before = text.read_bytes()
    for must_exist in (True, False):
        with pytest.raises(TasbRayError, match="not a SQLite database") as e:
            check_sqlite_store(_uri(text), must_exist=must_exist)
        assert str(text) in str(e.value) and "\n" not in str(e.value)
    assert text.read_bytes() == before


def test_store_shapes(tmp_path):
    good = _mlflow_like(tmp_path / "mlflow.db")
    check_sqlite_store(_uri(good), must_exist=True)
    check_sqlite_store(_uri(good), must_exist=False)

    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(TasbRayError, match="not an MLflow tracking store"):
        check_sqlite_store(_uri(other), must_exist=False)

    missing = tmp_path / "new.db"
    check_sqlite_store(_uri(missing), must_exist=False)  # a sweep creates it
    assert not missing.exists()
    with pytest.raises(TasbRayError, match="no MLflow database at"):
        check_sqlite_store(_uri(missing), must_exist=True)
    with pytest.raises(TasbRayError, match="folder of the tracking store"):
        check_sqlite_store(_uri(tmp_path / "no" / "such" / "x.db"), must_exist=False)
    with pytest.raises(TasbRayError, match="is a directory"):
        check_sqlite_store(_uri(tmp_path), must_exist=False)

    empty = tmp_path / "empty.db"
    empty.touch()
    check_sqlite_store(_uri(empty), must_exist=False)
    with pytest.raises(TasbRayError, match="empty SQLite file"):
        check_sqlite_store(_uri(empty), must_exist=True)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_server_fails_fast():
    uri = f"http://127.0.0.1:{_unused_port()}"
    t0 = time.monotonic()
    with pytest.raises(TasbRayError, match="tracking server not reachable") as e:
        check_tracking_store(uri, must_exist=True, timeout_s=5)
    assert time.monotonic() - t0 < 5 and uri in str(e.value) and "\n" not in str(e.value)


def test_silent_server_times_out():
    with socket.socket() as srv:  # accepts connections, never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        uri = f"http://127.0.0.1:{srv.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(TasbRayError, match="no answer within 0.5 s"):
            check_remote_store(uri, timeout_s=0.5)
        assert time.monotonic() - t0 < 3


def test_any_http_answer_counts_as_reachable():
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        check_remote_store(f"http://127.0.0.1:{server.server_address[1]}", timeout_s=5)
    finally:
        server.shutdown()
        server.server_close()
