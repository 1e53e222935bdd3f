"""A sweep whose driver dies mid-run continues with ``Tuner.restore`` when the same command runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sweep_fixture import write_sweep

REPO = Path(__file__).resolve().parents[2]


def _kill_group_and_ray(proc: subprocess.Popen, ray_dir: Path) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # Ray's own daemons name their session directory on the command line: stop only this sweep's.
    marker = str(ray_dir.resolve())
    subprocess.run(["pkill", "-9", "-f", marker], check=False)
    time.sleep(2)


@pytest.mark.slow
def test_killed_driver_continues_with_tuner_restore(tmp_path, tiny_model):
    from mlflow.tracking import MlflowClient

    config = write_sweep(tmp_path, tiny_model)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "experiments/seeds.py", "--config", str(config), "--run-dir", str(run_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not list((run_dir / "tune").glob("*/*/checkpoint_000000")):
            assert first.poll() is None, "the sweep ended before it could be killed"
            assert time.time() < deadline, "no trial checkpoint within 240 s"
            time.sleep(0.5)
    finally:
        _kill_group_and_ray(first, (run_dir / "ray").resolve())
    assert not (run_dir / "results" / "trials.csv").exists()

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "continuing the Tune experiment" in second.stdout + second.stderr
    assert (run_dir / "results" / "trials.csv").read_text().count("FINISHED") == 3   # 2 seeds + the untrained

    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny-seeds")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`tasb.kind` = 'trial'")
    # the same runs, not new ones
    assert sorted(r.info.run_name for r in trials) == ["seed=0", "seed=1", "untrained"]
    for run in [r for r in trials if r.info.run_name != "untrained"]:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert sorted(steps) == [1, 2, 3, 4]  # replayed steps are not logged twice
