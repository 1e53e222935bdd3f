"""One-GPU (and fractional-GPU) Tune trials on Ray's logical GPUs: a CPU machine, Ray started with 2 GPUs.

Ray hands out logical GPU ids and sets ``CUDA_VISIBLE_DEVICES`` whether or not the GPUs exist, so placement,
isolation and concurrency limits are testable here; torch sees no CUDA, so every trial must still train on CPU.
"""

from __future__ import annotations

import pytest
from sweep_fixture import write_sweep

from tasb_ray.errors import ConfigError
from tasb_ray.experiments.config import ResourcesConfig, load_sweep_config
from tasb_ray.experiments.sweep import concurrency_line, run_sweep

LOGICAL_GPUS = 2


# --- configuration: fractions, limits, errors ---------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.25, 0.5, 1, 1.0, 2, "auto"])
def test_gpus_per_trial_accepts_fractions_and_whole_numbers(value):
    assert ResourcesConfig(gpus_per_trial=value).gpus_per_trial == value


@pytest.mark.parametrize("value", [1.5, -0.5, "half", True, [1]])
def test_gpus_per_trial_rejects_what_ray_cannot_place(value):
    with pytest.raises(ConfigError, match=r"^resources\.gpus_per_trial: "):
        ResourcesConfig(gpus_per_trial=value)


def test_max_concurrent_trials_is_capped_by_the_gpus():
    assert ResourcesConfig(gpus_per_trial=1).concurrency(2, 2) == (1.0, 2)
    assert ResourcesConfig(gpus_per_trial=0.25).concurrency(16, 1) == (0.25, 4)
    assert ResourcesConfig(gpus_per_trial=0.1).concurrency(16, 1) == (0.1, 10)  # not 9: float rounding
    assert ResourcesConfig(gpus_per_trial=0.5, max_concurrent_trials=3).concurrency(2, 2) == (0.5, 3)
    assert ResourcesConfig(gpus_per_trial=1, max_concurrent_trials=8).concurrency(2, 2) == (1.0, 2)
    assert ResourcesConfig(gpus_per_trial="auto").concurrency(2, 0) == (0.0, None)
    assert ResourcesConfig(gpus_per_trial="auto", max_concurrent_trials=3).concurrency(2, 0) == (0.0, 3)
    with pytest.raises(ConfigError, match=r"resources\.gpus_per_trial: 2 GPU\(s\) per trial, but the Ray cluster has 1"):
        ResourcesConfig(gpus_per_trial=2).concurrency(8, 1)
    with pytest.raises(ConfigError, match="resources.max_concurrent_trials"):
        ResourcesConfig(max_concurrent_trials=0)
    assert concurrency_line(8, 2, 1.0, 2) == ("max concurrent trials: 2 (2 GPU(s) / 1 per trial; "
                                              "resources.max_concurrent_trials 8 capped)")


def test_sweep_file_names_the_bad_field(tmp_path, tiny_model):
    path = write_sweep(tmp_path, tiny_model, resources={"gpus_per_trial": 1.5})
    with pytest.raises(ConfigError, match=r"sweep\.yaml: .*resources\.gpus_per_trial: .*got 1\.5"):
        load_sweep_config(path)


# --- real sweeps on logical GPUs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_gpus(tmp_path_factory):
    import ray

    from tasb_ray.distributed.runtime import init_ray

    started = init_ray(num_cpus=2, num_gpus=LOGICAL_GPUS, temp_dir=tmp_path_factory.mktemp("ray"),
                       object_store_memory=256 * 2**20)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def sweep_root(tmp_path_factory):
    # One root: both sweeps share the work and cache directories, so the shared stages are built once.
    return tmp_path_factory.mktemp("gpu-sweeps")


def _sweep(root, model, name: str, seeds: list[int], gpus_per_trial: float):
    path = write_sweep(root, model, name=name, run_dir=str(root / name), grid={"seed": seeds},
                       set={"optim.max_steps": 2, "eval.every": 0, "checkpoint_every": 2},
                       # Half a CPU each: the CPUs would allow 4 trials at once, so only the GPUs limit them.
                       resources={"cpus_per_trial": 0.5, "gpus_per_trial": gpus_per_trial},
                       # Placement is what is tested: the untrained reference would be one more trial to place.
                       pipelines={"enabled": False}, reference=False)
    lines: list[str] = []
    result = run_sweep(load_sweep_config(path), say=lines.append)
    return result, lines


def _max_overlap(trials) -> int:
    events = sorted([(t, 1) for t in trials["placement/started_at"]] + [(t, -1) for t in trials["placement/ended_at"]],
                    key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


def _overlapping_pairs(trials):
    rows = trials.to_dict("records")
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["placement/started_at"] < b["placement/ended_at"] and b["placement/started_at"] < a["placement/ended_at"]:
                yield a, b


@pytest.fixture(scope="module")
def one_gpu_sweep(ray_gpus, sweep_root, tiny_model):
    return _sweep(sweep_root, tiny_model, "one-gpu", [0, 1, 2], 1)


def test_one_gpu_per_trial_runs_at_most_as_many_trials_as_gpus(one_gpu_sweep):
    result, lines = one_gpu_sweep
    trials = result.trials
    assert list(trials["status"]) == ["FINISHED"] * 3
    assert "max concurrent trials: 2 (2 GPU(s) / 1 per trial)" in lines
    assert "trial resources: {'cpu': 0.5, 'gpu': 1.0} (cluster: 2 CPUs, 2 GPUs)" in lines
    # Two GPUs, three trials: two ran together, never three.
    assert _max_overlap(trials) == 2


def test_each_trial_sees_only_its_own_gpu(one_gpu_sweep):
    result, _ = one_gpu_sweep
    trials = result.trials
    for t in trials.to_dict("records"):
        assert t["placement/gpu_ids"] in ("0", "1"), t
        assert t["placement/cuda_visible_devices"] == t["placement/gpu_ids"]
        assert t["placement/device"] == "cpu"   # a GPU id, but torch sees no CUDA here
    pairs = list(_overlapping_pairs(trials))
    assert pairs, "no two trials ran at the same time"
    for a, b in pairs:
        assert a["placement/gpu_ids"] != b["placement/gpu_ids"], (a, b)


def test_the_trial_run_records_where_it_ran(one_gpu_sweep):
    from mlflow.tracking import MlflowClient

    result, _ = one_gpu_sweep
    runs = MlflowClient(result.tracking_uri).search_runs([result.experiment_id],
                                                       filter_string="tags.`tasb.kind` = 'trial'")
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["placement.device"] == "cpu"
        assert run.data.tags["placement.gpu_ids"] == run.data.tags["placement.cuda_visible_devices"]


def test_half_a_gpu_per_trial_packs_two_trials_onto_one_gpu(ray_gpus, sweep_root, tiny_model):
    result, lines = _sweep(sweep_root, tiny_model, "half-gpu", [0, 1], 0.5)
    trials = result.trials
    assert list(trials["status"]) == ["FINISHED"] * 2
    assert "max concurrent trials: 4 (2 GPU(s) / 0.5 per trial)" in lines
    assert _max_overlap(trials) == 2
    a, b = trials.to_dict("records")
    assert a["placement/gpu_ids"] == b["placement/gpu_ids"] and a["placement/gpu_ids"] in ("0", "1")
    assert a["placement/cuda_visible_devices"] == a["placement/gpu_ids"]
