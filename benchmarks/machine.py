"""One line describing the machine a benchmark ran on, for the results files."""

from __future__ import annotations

import os
import platform
import shlex
import sys


def describe_machine(gpu: str | None = "no GPU") -> str:
    """``host: N cores (CPU model), M GiB RAM, <gpu>, Python x.y.z, OS release``."""
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    parts = [f"{platform.node() or 'host'}: {os.cpu_count()} cores ({cpu})", f"{mem:.0f} GiB RAM"]
    if gpu:
        parts.append(gpu)
    parts += [f"Python {platform.python_version()}", f"{platform.system()} {platform.release()}"]
    return ", ".join(parts)


def load_line(before: tuple[float, ...], after: tuple[float, ...]) -> str:
    """``Load average (1/5/15 min) before: a / b / c, after: d / e / f`` (``os.getloadavg()`` around a run)."""
    return (f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in before)}, after: "
            f"{' / '.join(f'{x:.2f}' for x in after)}")


def command_line(script: str, argv: list[str] | None = None) -> str:
    """``python SCRIPT ARGS`` as a results file names it (the process's own arguments when ``argv`` is None)."""
    return shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])
