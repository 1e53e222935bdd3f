"""The in-batch memory benchmark runs end to end at a tiny size and writes its table (numbers are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_inbatch_memory_benchmark_runs_and_cleans_up(tmp_path):
    out, work = tmp_path / "inbatch.md", tmp_path / "vectors"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "inbatch_memory.py"), "--mmap-rows", "3000",
                          "--ram-rows", "3000", "--query-rows", "500", "--batches", "3", "--dir", str(work),
                          "--out", str(out)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    report = out.read_text()
    for row in ("| mmap float16 | 3,000 | 0.00 | cold |", "| mmap float16 | 3,000 | 0.00 | warm |",
                "| in RAM float32 | 3,000 | - | - |"):
        assert row in report
    assert "scores 3 in-batch matrices of 32 queries x 64 passages" in report and "500 query vectors" in report
    assert not work.exists()  # the vector files are deleted
