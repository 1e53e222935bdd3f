"""One line describing the machine a benchmark ran on, for the results files."""

from __future__ import annotations

import os
import platform


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
