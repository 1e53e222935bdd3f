"""Errors that reach users as one line naming the file and line (or field) at fault."""

from __future__ import annotations

import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class TasbRayError(Exception):
    """Base for errors the CLI prints as a single line (no traceback)."""


class DataFormatError(TasbRayError):
    """Bad input data. The message reads ``path:line: problem`` or ``path: field 'x': problem``."""

    def __init__(self, path: str | os.PathLike, problem: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path
        if line is not None:
            where += f":{line}"
        if field is not None:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")


class ConfigError(TasbRayError):
    """Invalid configuration: unknown key, wrong type, bad value."""


def input_error_line(e: BaseException) -> str | None:
    """One line for the errors bad input raises deep inside libraries, or None for anything else.

    The readers convert these where the file and line are known; this is the net under everything else
    (a library reading a user's file, a YAML document parsed outside ``tasb_ray.config``).
    """
    if isinstance(e, PermissionError):
        return f"{e.filename}: permission denied" if e.filename else f"permission denied ({e.strerror or e})"
    if isinstance(e, UnicodeDecodeError):
        byte = f"byte 0x{e.object[e.start]:02x} " if e.start < len(e.object) else ""
        return f"input is not valid {e.encoding} ({byte}at offset {e.start})"
    if isinstance(e, RecursionError):
        return "input nested too deeply (maximum recursion depth exceeded)"
    if type(e).__module__.split(".")[0] == "yaml" and isinstance(e, Exception) and type(e).__name__.endswith("Error"):
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or e
        name = getattr(mark, "name", None) or ""
        name = "input" if not name or name.startswith("<") else name  # '<unicode string>' names no file
        return f"{name}: invalid YAML: {' '.join(str(problem).split())}{where}"
    return None


def run_guarded(prog: str, fn: Callable[[], T], interrupted: str = "interrupted") -> tuple[T | None, int | None]:
    """Run a command's body: ``(value, None)``, or ``(None, exit code)`` after one line on stderr.

    A :class:`TasbRayError` prints ``prog: error: message`` and gives 2, and so do the errors of bad input
    that escaped conversion at their source (see :func:`input_error_line`); Ctrl-C prints
    ``prog: <interrupted>`` and gives 130. Any other exception is a bug and keeps its traceback.
    """
    try:
        return fn(), None
    except TasbRayError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return None, 130
    except Exception as e:
        line = input_error_line(e)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        return None, 2
