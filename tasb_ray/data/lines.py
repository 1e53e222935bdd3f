"""Line-numbered parsing helpers shared by the readers, so every error names file and line."""

from __future__ import annotations

import io
import json
import os
from typing import Iterator

from tasb_ray.errors import DataFormatError


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline), skipping blank lines.

    Lines end at ``\n``, ``\r\n`` or a lone ``\r`` (Python's universal newlines). Bytes that are not UTF-8
    raise one :class:`DataFormatError` naming the line.
    """
    if not os.path.exists(path):
        raise DataFormatError(path, "file not found")
    try:
        f = open(path, encoding="utf-8")
    except PermissionError:
        raise DataFormatError(path, "permission denied") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory, expected a file") from None
    try:
        with f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError:
        # The text reader decodes ahead in blocks, so its error has no line: find it on the (rare) error path.
        raise locate_utf8_error(path) from None


def count_lines(data: bytes) -> int:
    """Line breaks in ``data`` as universal newlines count them (``\n``, ``\r\n``, lone ``\r``)."""
    n = data.count(b"\n")
    if b"\r" in data:
        n += data.count(b"\r") - data.count(b"\r\n")
    return n


def iter_line_blocks(path: str | os.PathLike, block_size: int = 16 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield (number of the block's first line, bytes) for consecutive blocks of about ``block_size`` bytes that
    each end at a ``\n`` (the last one at the end of the file), so a block holds whole lines only."""
    if not os.path.exists(path):
        raise DataFormatError(path, "file not found")
    line = 1
    size = block_size
    with open(path, "rb") as f:
        while True:
            block = f.read(size)
            if not block:
                return
            if len(block) == size:  # not the end of the file: stop at the last line break, re-read the rest
                cut = block.rfind(b"\n") + 1
                if cut == 0:  # one line longer than a block: read a larger block
                    f.seek(-len(block), os.SEEK_CUR)
                    size *= 2
                    continue
                if cut < len(block):
                    f.seek(cut - len(block), os.SEEK_CUR)
                    block = block[:cut]
            size = block_size
            yield line, block
            line += count_lines(block)


def has_lone_cr(block: bytes) -> bool:
    """Whether ``block`` has a ``\r`` not followed by ``\n``: a line break to the line rules and to Arrow, but
    blank-line handling and block line counts then differ, so such blocks take the line rules."""
    return b"\r" in block and block.count(b"\r") != block.count(b"\r\n")


def block_lines(path, block: bytes, first_line: int) -> Iterator[tuple[int, str]]:
    """(line number, line without its break) of every non-blank line of a block of whole lines starting at
    ``first_line``, with the universal newlines of :func:`iter_lines` so numbers agree; bad UTF-8 is one line."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as e:
        raise utf8_error(path, block, first_line, e) from None
    for n, line in enumerate(io.StringIO(text, newline=None), first_line):
        line = line.rstrip("\r\n")
        if line.strip():
            yield n, line


def utf8_error(path, data: bytes, first_line: int, exc: UnicodeDecodeError) -> DataFormatError:
    """The one-line error for ``exc``, raised decoding ``data`` (whole lines starting at ``first_line``); the column
    counts bytes, as an editor's hex view would."""
    head = data[:exc.start]
    start = max(head.rfind(b"\n"), head.rfind(b"\r")) + 1
    byte = data[exc.start:exc.start + 1].hex()
    return DataFormatError(path, f"not valid UTF-8 (byte 0x{byte} at column {exc.start - start + 1})",
                           line=first_line + count_lines(head))


def locate_utf8_error(path: str | os.PathLike) -> DataFormatError:
    """The error for the first bytes of ``path`` that are not UTF-8, found by a streaming scan."""
    for first, block in iter_line_blocks(path):
        try:
            block.decode("utf-8")
        except UnicodeDecodeError as e:
            return utf8_error(path, block, first, e)
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
