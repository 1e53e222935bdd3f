"""Cheap checks of an MLflow tracking URI before MLflow opens it, so a wrong store fails in one line.

Without them a text file given as ``sqlite:///x`` surfaces as an SQLAlchemy traceback (and MLflow may try to
create its tables in someone else's database), and a refused ``http://`` server costs about two minutes of
MLflow's retries before its traceback. These functions only read: SQLite files are opened read-only.
"""

from __future__ import annotations

import socket
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tasb_ray.errors import TasbRayError

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
            raise TasbRayError(f"{path}: tracking store not found")
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
