"""Sweep trials that evaluate on Ray Data: each trial reserves its encoder actors (``resources.eval_workers``).

The trial's placement group holds its trainer's bundle, one bundle per encoder actor and one CPU for Ray Data's
read tasks, packed on one node; the evaluation's actor pool and every Ray Data task run inside it. Without the
reservation, trials holding every CPU waited at their final evaluation for CPUs no one would free.
"""

from __future__ import annotations

import json

import pytest
import yaml
from sweep_fixture import write_sweep
from time_limit import watchdog

from tasb_ray.distributed.ray_data import READER_BUNDLE, group_pool, trial_bundles
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.experiments import sweep as sweep_mod
from tasb_ray.experiments.config import ResourcesConfig
from tasb_ray.training.config import TrainingConfig

# --- layout and checks (no Ray) -------------------------------------------------------------------------------


def test_trial_bundles_trainer_then_encoders_then_reader():
    assert trial_bundles(2, 0, 0) == [{"CPU": 2.0}]
    assert trial_bundles(2, 0, 2) == [{"CPU": 2.0}, {"CPU": 2.0}, {"CPU": 2.0}, READER_BUNDLE]
    assert trial_bundles(4, 1, 1) == [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}, READER_BUNDLE]
    assert trial_bundles(4, 2, 1) == [{"CPU": 4.0, "GPU": 2.0}, {"CPU": 4.0, "GPU": 1.0}, READER_BUNDLE]  # one device


def test_group_pool_one_actor_per_encoder_bundle():
    cpu = group_pool(trial_bundles(2, 0, 3))
    assert (cpu.actors, cpu.resources, cpu.threads, cpu.use_gpu) == (3, {"num_cpus": 2.0}, 2, False)
    gpu = group_pool(trial_bundles(1, 0.5, 2))
    assert (gpu.actors, gpu.resources, gpu.threads, gpu.use_gpu) == (2, {"num_cpus": 1.0, "num_gpus": 0.5}, None, True)
    with pytest.raises(TasbRayError, match="no encoder bundles.*resources.eval_workers >= 1"):
        group_pool(trial_bundles(2, 0, 0))


def test_eval_workers_validation_and_gpu_concurrency():
    with pytest.raises(ConfigError, match=r"^resources\.eval_workers: an integer >= 0, got -1"):
        ResourcesConfig(eval_workers=-1)
    with pytest.raises(ConfigError, match=r"^resources\.eval_workers: "):
        ResourcesConfig(eval_workers=1.5)
    # Encoder bundles are shaped like the trainer's: a 1-GPU trial with 1 eval worker holds 2 GPUs.
    assert ResourcesConfig(gpus_per_trial=1, eval_workers=1).concurrency(16, 4) == (1.0, 2)
    assert ResourcesConfig(gpus_per_trial=0.5, eval_workers=1).concurrency(16, 1) == (0.5, 1)
    assert ResourcesConfig(gpus_per_trial=2, eval_workers=1).concurrency(16, 8) == (2.0, 2)   # 2 + 1 per trial
    with pytest.raises(ConfigError, match=r"1 GPU\(s\) per trial \(with 1 eval worker\(s\) of as many\), 2 in all, "
                                          r"but the Ray cluster has 1"):
        ResourcesConfig(gpus_per_trial=1, eval_workers=1).concurrency(16, 1)


def test_a_group_that_fits_no_node_is_refused():
    r = ResourcesConfig(cpus_per_trial=2, eval_workers=1)
    r.check_group([(5.0, 0.0), (2.0, 0.0)], 0.0)                  # 2 + 2 + 1 CPUs on the 5-CPU node
    ResourcesConfig(cpus_per_trial=8).check_group([(1.0, 0.0)], 0.0)   # no group: Tune's own check
    with pytest.raises(ConfigError, match=r"holds 5 CPUs \(2 x 2 \+ 1 for reading\) and 0 GPUs on one node, but no "
                                          r"Ray node has that \(4 CPUs / 0 GPUs, 4 CPUs / 0 GPUs\)"):
        r.check_group([(4.0, 0.0), (4.0, 0.0)], 0.0)
    gpu = ResourcesConfig(cpus_per_trial=2, gpus_per_trial=1, eval_workers=1)
    gpu.check_group([(64.0, 0.0), (8.0, 2.0)], 1.0)    # the CPU-rich head has no GPU; the GPU node fits it all
    with pytest.raises(ConfigError, match=r"and 2 GPUs on one node"):
        gpu.check_group([(64.0, 0.0), (8.0, 1.0), (8.0, 1.0)], 1.0)   # 2 GPUs in the cluster, 1 per node


def test_trials_evaluating_on_ray_need_eval_workers():
    from tasb_ray.config import from_dict

    cfg = from_dict(TrainingConfig, {"name": "t", "eval": {"ray_min_passages": 100}})
    sweep_mod.check_trial_eval(cfg, 99)                      # below the threshold: in process, nothing reserved
    sweep_mod.check_trial_eval(cfg, 100, eval_workers=1)     # at it, with encoders reserved
    with pytest.raises(ConfigError, match=r"^resources\.eval_workers: the corpus has 100 passages \(>= "
                                          r"eval\.ray_min_passages 100\).*set resources\.eval_workers >= 1"):
        sweep_mod.check_trial_eval(cfg, 100)


def test_trial_resources_is_a_strictly_packed_group_with_eval_workers():
    assert sweep_mod.trial_resources(1, 0, 0) == {"cpu": 1, "gpu": 0}
    pgf = sweep_mod.trial_resources(1, 0, 2)
    assert pgf.bundles == trial_bundles(1, 0, 2) and pgf.strategy == "STRICT_PACK"


def test_the_command_line_keeps_the_configs_eval_workers_and_can_set_them():
    from pathlib import Path

    from tasb_ray.experiments.main import build_parser, sweep_from_args

    config = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "seeds-msmarco.yaml"
    parser = build_parser("seeds.py", "", config, None)

    def resources(*argv):
        r = sweep_from_args(parser.parse_args(list(argv)), config).resources
        return r.cpus_per_trial, r.gpus_per_trial, r.eval_workers

    assert resources() == (4, 0.5, 1)
    assert resources("--cpus-per-trial", "2") == (2, 0.5, 1)      # another flag keeps the config's workers
    assert resources("--eval-workers", "3", "--gpus-per-trial", "1") == (4, 1, 3)
    with pytest.raises(ConfigError, match=r"^resources\.eval_workers: an integer >= 0, got -1"):
        resources("--eval-workers", "-1")


# --- a real sweep whose trials hold every CPU and evaluate on Ray Data ------------------------------------------


def test_trials_holding_every_cpu_evaluate_on_ray_data(tmp_path, tiny_model):
    """Untrained reference + one trained trial, 3 CPUs each (trainer, encoder, reader) on a 6-CPU Ray: both run
    at once with no CPU free, and both evaluate on Ray Data in their own groups; the reference's metrics are the
    untrained student's, evaluated here in process."""
    from tasb_ray.config import from_dict
    from tasb_ray.evaluation.first_stage import build_dense_index, dense_search
    from tasb_ray.evaluation.metrics import evaluate
    from tasb_ray.experiments.config import load_sweep_config
    from tasb_ray.models.encoder import BertDot
    from tasb_ray.pipeline.run import open_data

    path = write_sweep(tmp_path, tiny_model, grid={"seed": [0]}, resources={"cpus_per_trial": 1, "eval_workers": 1},
                       ray={"num_cpus": 6}, pipelines={"enabled": False})
    base_path = tmp_path / "base.yaml"
    base = yaml.safe_load(base_path.read_text())
    base["eval"].update(every=0, ray_min_passages=0)   # every corpus "at scale": the Ray path, final evaluation only
    base["optim"]["max_steps"] = 2
    base["sampler"]["sampling"] = "random"              # no clusters stage: the test is about evaluation
    base["teachers"]["pairwise"] = {"kind": "bm25"}
    base_path.write_text(yaml.safe_dump(base))

    said: list[str] = []
    with watchdog(600):  # without the reservation this sweep waits forever at its first evaluation
        result = sweep_mod.run_sweep(load_sweep_config(path), say=said.append)
    trials = result.trials.set_index("key")
    assert set(trials["status"]) == {"FINISHED"} and len(trials) == 2, trials.to_string()
    # Both trials at once (3 + 3 of 6 CPUs): the reference evaluated while the trained trial held the other 3.
    assert trials["placement/started_at"].max() < trials["placement/ended_at"].min(), trials.to_string()
    assert any("placement group" in s and "STRICT_PACK" in s for s in said), said

    found = {}
    for res in (result.run_dir / "tune").glob("*/*/checkpoint_*/results.json"):
        found[res.parents[1].name.split("_")[0]] = json.loads(res.read_text())
    assert len(found) == 2, sorted(found)
    for info in found.values():
        ev = info["eval_index"]
        assert ev["path"] == "ray" and ev["encoded_shards"] >= 1, ev
        assert ev["actor_pool"] == {"actors": 1, "resources": {"num_cpus": 1.0}, "use_gpu": False,
                                    "placement_group": True}

    cfg = from_dict(TrainingConfig, {**base, "progress": False})
    ds = open_data(cfg)
    s = cfg.student
    student = BertDot(s.model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                      passage_max_len=s.passage_max_len, attention_dropout=s.attention_dropout,
                      score_scale=s.score_scale).eval()
    index = build_dense_index(student, ds.corpus(), cfg.eval.batch_size)
    run = dense_search(student, index, ds.queries("test"), cfg.eval.k, cfg.eval.batch_size)
    expected = evaluate(run, ds.qrels("test"), cfg.eval.metrics, cfg.data.rel_level)
    ref = trials.loc["untrained"]
    for metric, value in expected.items():
        assert ref[f"final_test/{metric}"] == pytest.approx(value, abs=1e-6)
