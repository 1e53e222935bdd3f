"""Line-numbered parsing helpers shared by the readers, so every error names file and line."""

from __future__ import annotations

import json
import os
from typing import Iterator

from tasb_ray.errors import DataFormatError


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline), skipping blank lines."""
    if not os.path.exists(path):
        raise DataFormatError(path, "file not found")
    try:
        f = open(path, encoding="utf-8")
    except PermissionError:
        raise DataFormatError(path, "permission denied") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory, expected a file") from None
    with f:
        try:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
        except UnicodeDecodeError:
            raise utf8_error(path) from None


def utf8_error(path: str | os.PathLike) -> DataFormatError:
    """The first invalid UTF-8 byte of ``path`` as ``path:line: not valid UTF-8 (byte 0x.. at column N)``.

    The text reader's exception gives only an offset into its current buffer, so the file is scanned again
    in binary (only on this error path). The column counts bytes, as an editor's hex view would.
    """
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                # A character cut by the line end cannot happen: b"\n" never occurs inside a UTF-8 sequence.
                return DataFormatError(path, f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                                       line=n)
    return DataFormatError(path, "not valid UTF-8")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    for n, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"invalid JSON: {e.msg} (column {e.colno})", line=n) from None
        except RecursionError:
            raise DataFormatError(path, "invalid JSON: nested too deeply", line=n) from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(obj).__name__}", line=n)
        yield n, obj


def split_columns(path, n: int, line: str, expected: int | tuple[int, ...], sep: str | None = "\t") -> list[str]:
    """Split a line into exactly ``expected`` columns (``sep=None``: any whitespace)."""
    parts = line.split(sep)
    ok = (expected,) if isinstance(expected, int) else expected
    if len(parts) not in ok:
        want = " or ".join(str(e) for e in ok)
        kind = "tab-separated" if sep == "\t" else "whitespace-separated"
        raise DataFormatError(path, f"expected {want} {kind} columns, got {len(parts)}", line=n)
    return parts


def parse_int(path, n: int, value: str, field: str) -> int:
    try:
        return int(value)
    except ValueError:
        try:
            f = float(value)
        except ValueError:
            f = None
        if f is not None and f.is_integer():
            return int(f)
        raise DataFormatError(path, f"not an integer: {value!r}", line=n, field=field) from None


def parse_float(path, n: int, value: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataFormatError(path, f"not a number: {value!r}", line=n, field=field) from None


def require_id(path, n: int, obj: dict, field: str) -> str:
    if field not in obj:
        raise DataFormatError(path, "missing required field", line=n, field=field)
    value = obj[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, f"id must be a string or integer, got {type(value).__name__}", line=n, field=field)
    value = str(value).strip()
    if not value:
        raise DataFormatError(path, "empty id", line=n, field=field)
    return value


def require_text(path, n: int, obj: dict, field: str, required: bool = True) -> str:
    if field not in obj or obj[field] is None:
        if required:
            raise DataFormatError(path, "missing required field", line=n, field=field)
        return ""
    value = obj[field]
    if not isinstance(value, str):
        raise DataFormatError(path, f"expected a string, got {type(value).__name__}", line=n, field=field)
    return value


class UniqueIds:
    """Tracks ids seen in one file and reports the first duplicate with both line numbers."""

    def __init__(self, path, what: str = "id"):
        self.path = path
        self.what = what
        self.seen: dict[str, int] = {}

    def add(self, n: int, value: str) -> None:
        first = self.seen.setdefault(value, n)
        if first != n:
            raise DataFormatError(self.path, f"duplicate {self.what} {value!r} (first at line {first})", line=n)
