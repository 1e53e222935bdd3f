"""Atomic writes: the old file or the complete new one, never a partial one under the final name."""

from __future__ import annotations

import os
import threading

import pytest

from tasb_ray import fileio
from tasb_ray.fileio import atomic_path, write_json, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{partial")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_the_bytes_are_flushed_before_the_rename(tmp_path, monkeypatch):
    order = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: order.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(fileio.os, "replace", lambda a, b: order.append("replace") or real_replace(a, b))
    write_text(tmp_path / "x.txt", "done\n")
    assert order == ["fsync", "replace", "fsync"]     # the file, the rename, then the directory entry
    assert (tmp_path / "x.txt").read_text() == "done\n"


def test_concurrent_writers_of_one_path_never_share_a_temporary(tmp_path):
    target = tmp_path / "shared.txt"
    names, barrier = [], threading.Barrier(4)

    def writer(i: int) -> None:
        with atomic_path(target) as tmp:
            names.append(tmp.name)
            barrier.wait(timeout=10)          # all four temporaries exist at once
            tmp.write_text(f"writer {i}\n" * 1000)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 4 and all(n.startswith(".shared.txt.tmp-") for n in names)
    text = target.read_text()
    assert len(set(text.splitlines())) == 1 and len(text.splitlines()) == 1000   # one writer's whole file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"]
