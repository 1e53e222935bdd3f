"""`ray job submit` of experiments/seeds.py against a real local head node (`ray start --head`), to SUCCEEDED."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_fixture import write_sweep

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, timeout: float = 90) -> None:
    import urllib.error
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:
            return  # answering (401 when Ray's token authentication is on, the default for local clusters)
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"Ray dashboard on port {port} did not come up")


@pytest.mark.slow
def test_ray_job_submit_runs_a_tiny_sweep(tmp_path, tiny_model):
    import tempfile

    config = write_sweep(tmp_path, tiny_model)
    run_dir = tmp_path / "job-run"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           # Ray >= 2.59 turns token authentication on for a local head whenever ~/.ray/auth_token exists, but
           # the job CLI only sends the token with the mode set: one explicit token for head, CLI and driver.
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    gcs, dash = _free_port(), _free_port()
    temp = tempfile.mkdtemp(prefix="tr-job-")  # Ray's socket paths must stay short
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--disable-usage-stats",
                             f"--temp-dir={temp}", "--include-dashboard=true"],
                            env=env, cwd=tmp_path, start_new_session=True,
                            stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT)
    try:
        _wait_http(dash)
        address = f"http://127.0.0.1:{dash}"
        cmd = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
               "--submission-id", "tiny-sweep", "--",
               "python", "experiments/seeds.py", "--config", str(config), "--run-dir", str(run_dir)]
        for _ in range(12):
            submit = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=420)
            # The dashboard answers before its job agent is up on a loaded machine (seen under load): the job was
            # not created, so the same submission is sent again.
            if "No available agent to submit job" not in submit.stdout + submit.stderr:
                break
            time.sleep(5)
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
        status = subprocess.run([str(BIN / "ray"), "job", "status", "--address", address, "tiny-sweep"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert "Job 'tiny-sweep' succeeded" in status.stdout + status.stderr, status.stdout + status.stderr
        assert "robustness across seeds" in submit.stdout
        trials = (run_dir / "results" / "trials.csv").read_text()
        assert trials.count("FINISHED") == 3   # 2 seeds + the untrained reference
        assert (run_dir / "mlflow.db").is_file()
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
