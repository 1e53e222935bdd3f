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


def run_guarded(prog: str, fn: Callable[[], T], interrupted: str = "interrupted") -> tuple[T | None, int | None]:
    """Run a command's body: ``(value, None)``, or ``(None, exit code)`` after one line on stderr.

    A :class:`TasbRayError` prints ``prog: error: message`` and gives 2; Ctrl-C prints ``prog: <interrupted>``
    and gives 130. Any other exception is a bug and keeps its traceback.
    """
    try:
        return fn(), None
    except TasbRayError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return None, 130
