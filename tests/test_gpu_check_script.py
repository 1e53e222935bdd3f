"""scripts/gpu_check.sh without a GPU: the carried-wheels reassembly and checks, and a dry run of its steps on CPU."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LIB = REPO / "scripts" / "wheels_lib.sh"


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"source {LIB}; {script}"], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture()
def wheels(tmp_path):
    d = tmp_path / "wheels"
    d.mkdir()
    big = os.urandom(3 * 2**20 + 123)   # cut into 1 MiB parts: aa, ab, ac, ad
    (d / "big-1.0-py3-none-any.whl").write_bytes(big)
    (d / "small-1.0-py3-none-any.whl").write_bytes(b"small wheel")
    r = _bash(f"split_and_manifest {d} 1M", tmp_path)
    assert r.returncode == 0, r.stderr
    return d, hashlib.sha256(big).hexdigest()


def test_big_wheels_are_split_and_reassembled_with_their_checksum(wheels, tmp_path):
    d, sha = wheels
    names = sorted(p.name for p in d.iterdir())
    assert names == ["SHA256SUMS", "big-1.0-py3-none-any.whl.part-aa", "big-1.0-py3-none-any.whl.part-ab",
                     "big-1.0-py3-none-any.whl.part-ac", "big-1.0-py3-none-any.whl.part-ad",
                     "small-1.0-py3-none-any.whl"]
    assert f"{sha}  big-1.0-py3-none-any.whl" in (d / "SHA256SUMS").read_text()
    r = _bash(f"assemble_wheels {d}", tmp_path)
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256((d / "big-1.0-py3-none-any.whl").read_bytes()).hexdigest() == sha


def test_a_corrupt_or_missing_part_is_named(wheels, tmp_path):
    d, _ = wheels
    part = d / "big-1.0-py3-none-any.whl.part-ab"
    data = bytearray(part.read_bytes())
    data[100] ^= 0xFF
    part.write_bytes(bytes(data))
    r = _bash(f"assemble_wheels {d}", tmp_path)
    assert r.returncode == 1
    assert "a part of big-1.0-py3-none-any.whl is missing or corrupt" in r.stderr
    assert not (d / "big-1.0-py3-none-any.whl").exists()
    part.unlink()
    r = _bash(f"assemble_wheels {d}", tmp_path)
    assert r.returncode == 1 and "big-1.0-py3-none-any.whl.part-ab" in r.stderr


def test_a_wheel_outside_the_manifest_is_refused(wheels, tmp_path):
    d, _ = wheels
    (d / "stray-1.0-py3-none-any.whl").write_bytes(b"x")
    r = _bash(f"assemble_wheels {d}", tmp_path)
    assert r.returncode == 1 and "stray-1.0-py3-none-any.whl is not in SHA256SUMS" in r.stderr


def test_install_is_offline_into_a_target(tmp_path):
    """A real (tiny, pure-Python) wheel through assemble + install_wheels, as on the GPU machine."""
    src = tmp_path / "pkg"
    (src / "gpucheckdemo").mkdir(parents=True)
    (src / "gpucheckdemo" / "__init__.py").write_text("VALUE = 42\n")
    (src / "pyproject.toml").write_text('[project]\nname = "gpucheckdemo"\nversion = "1.0"\n'
                                        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n')
    d = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(d),
                        str(src)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {r.stderr.strip().splitlines()[-1:]}")
    r = _bash(f"split_and_manifest {d} 1M && assemble_wheels {d} && install_wheels {d} {tmp_path / 'site'} "
              f"{sys.executable}", tmp_path)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([sys.executable, "-c", "import gpucheckdemo; print(gpucheckdemo.VALUE)"],
                         env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True)
    assert out.stdout.strip() == "42"


@pytest.mark.slow
def test_dry_run_of_the_training_and_encoding_steps(tmp_path):
    """Steps b (encode-corpus), c (train overhead) and d (encode benchmark) on CPU with the tiny model. The sweep
    step (a) runs the same code as tests/experiments/test_gpu_trials.py, which covers it."""
    out = tmp_path / "gpu.md"
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run", "--steps", "bcde", "--work",
                        str(tmp_path / "work"), "--out", str(out)],
                       env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=600)
    text = out.read_text()
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:] + text
    assert "Dry run on CPU" in text
    for section in ("## (b) encode-corpus", "## (c) train step overhead", "## (d) encode throughput",
                    "## (e) GPU utilisation"):
        assert section in text, section
    assert "actors: " in text and "'num_cpus'" in text   # --no-gpu in a dry run: a CPU actor pool
    assert "| 0.0 |" in text and "overhead |" in text  # the overhead table
    assert "Steady ratio Ray / sentence-transformers" in text
