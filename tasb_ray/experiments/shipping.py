"""Shared stage files travel to the trials through Ray's object store when nodes may not share a disk.

The driver packs the prepared dataset and the cached stage directories (pairs, clusters, teacher
vectors) into one mapping of bytes; ``tune.with_parameters`` puts it in the object store once, and every
trial unpacks it into its own working directory. On one machine (or a shared filesystem) trials read the
driver's paths directly and nothing is shipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from tasb_ray.fileio import atomic_dir

Bundle = dict[str, dict[str, bytes]]   # root name -> relative file path -> content


def pack(roots: Mapping[str, str | os.PathLike]) -> Bundle:
    bundle: Bundle = {}
    for name, root in roots.items():
        root = Path(root)
        bundle[name] = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return bundle


def unpack(bundle: Bundle, dest: str | os.PathLike) -> dict[str, Path]:
    """Write each root under ``dest/<name>`` (atomically, skipped when already there); returns the paths."""
    out = {}
    for name, files in bundle.items():
        target = Path(dest) / name
        if not target.is_dir():
            with atomic_dir(target) as tmp:
                for rel, data in files.items():
                    path = tmp / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
        out[name] = target
    return out


def bundle_size(bundle: Bundle) -> int:
    return sum(len(b) for files in bundle.values() for b in files.values())
