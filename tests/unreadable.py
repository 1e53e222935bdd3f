"""Make one file unreadable for a test, also when the tests run as root (where chmod 000 does not stop reads)."""

from __future__ import annotations

import builtins
import io
import os
from pathlib import Path


def deny_reads(path: Path, monkeypatch) -> None:
    """chmod 000 ``path``; as root, also make ``open`` of exactly that file raise the PermissionError it would."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    target = os.path.realpath(path)
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(file)) == target:
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)
