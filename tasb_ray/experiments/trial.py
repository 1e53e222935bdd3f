"""One trial of a sweep as a Ray Tune function trainable: train, evaluate, run the pipelines, report.

Everything the driver needs comes back through ``ray.tune.report``: training logs and dev evaluations as
metrics, every trainer checkpoint as a ``tune.Checkpoint`` (so a trial that dies resumes from it on any
node and continues the same batch sequence), and at the end a final checkpoint directory with the
results, TREC runs, per-query metrics and pipeline tables, which the driver logs to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import torch
from ray import tune

from tasb_ray.config import from_dict
from tasb_ray.data import PreparedDataset
from tasb_ray.data.trec import read_trec_run
from tasb_ray.distributed.options import RayOptions
from tasb_ray.distributed.ray_data import group_pool
from tasb_ray.evaluation.metrics import per_query
from tasb_ray.evaluation.pipelines import PipelineOptions, run_pipelines
from tasb_ray.experiments.config import PipelinesConfig
from tasb_ray.experiments.grid import safe_name
from tasb_ray.experiments.records import PLACEMENT_PREFIX
from tasb_ray.experiments.shipping import unpack
from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import write_json, write_text
from tasb_ray.pipeline.run import open_data, run_training, work_dir
from tasb_ray.pipeline.teacher_vectors import attach_teacher_vectors
from tasb_ray.retrieval.bm25 import BM25Index
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT
from tasb_ray.teachers import build_teacher
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import CHECKPOINT

log = logging.getLogger(__name__)

FINAL_MARKER = "final.json"
PER_QUERY = "per_query.parquet"


def trial_device(configured: str | None = None) -> tuple[str, dict]:
    """The torch device a trial trains on, and what it saw: its GPU ids, ``CUDA_VISIBLE_DEVICES``, the device.

    CUDA only when Ray gave the trial a GPU and torch sees one: a trial without a GPU id must not train on a GPU
    that Ray has handed to another trial, and on a CPU machine with logical GPUs (tests) torch sees no CUDA.
    ``configured`` (the training config's ``device``) wins when set.
    """
    ids = [str(i) for i in ray.get_gpu_ids()]
    if configured:
        device = configured
    else:
        device = "cuda" if ids and torch.cuda.is_available() else "cpu"
    seen = {"gpu_ids": ",".join(ids), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"),
            "device": device, "torch_cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "node": ray.get_runtime_context().get_node_id()[:12]}
    return device, seen


def _placement(seen: dict, started: float) -> dict:
    return {**{f"{PLACEMENT_PREFIX}{k}": v for k, v in seen.items()}, f"{PLACEMENT_PREFIX}started_at": started,
            f"{PLACEMENT_PREFIX}ended_at": time.time()}


def _fault_marker(fault: dict, run_dir: str, key: str) -> Path | None:
    return Path(run_dir) / "faults" / f"{safe_name(key)}.done" if fault.get("after_checkpoint_step") else None


class TuneReporter:
    """Trainer events → ``ray.tune.report``; optionally kills the process once, after a checkpoint (fault injection)."""

    def __init__(self, trial: dict):
        self.trial = trial
        fault = trial.get("fault") or {}
        match = fault.get("match") or {}
        self.kill_step = fault.get("after_checkpoint_step") if all(
            trial["values"].get(k) == v for k, v in match.items()) else None
        self.marker = _fault_marker(fault, trial["run_dir"], trial["key"]) if self.kill_step else None

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        tune.report({"step": step, "event": "log", **{f"train/{k}": v for k, v in metrics.items()}})

    def on_eval(self, step: int, split: str, metrics: dict[str, float]) -> None:
        tune.report({"step": step, "event": "eval", **{f"{split}/{k}": v for k, v in metrics.items()}})

    def on_checkpoint(self, step: int, path: Path) -> None:
        state = json.loads((path / "trainer_state.json").read_text())
        tune.report({"step": step, "event": "checkpoint", "plan_hash": state.get("plan_hash", "")},
                    checkpoint=tune.Checkpoint.from_directory(str(path)))
        if self.kill_step is not None and step == self.kill_step and not self.marker.exists():
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text(f"killed after checkpoint step {step}\n")
            log.warning("fault injection: killing trial %s after checkpoint step %d", self.trial["key"], step)
            os._exit(17)  # a hard kill: no cleanup, no exception handling, like a lost node


def _restore(checkpoint, output_dir: Path) -> bool:
    """Copy Tune's checkpoint into the trainer's checkpoint directory; True when it is the trial's final result."""
    with checkpoint.as_directory() as d:
        d = Path(d)
        if (d / FINAL_MARKER).is_file():
            final = output_dir / "final"
            shutil.rmtree(final, ignore_errors=True)
            shutil.copytree(d, final)
            return True
        target = output_dir / CHECKPOINT
        shutil.rmtree(target, ignore_errors=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(d, target)
    return False


def _final_metrics(final: Path) -> dict[str, Any]:
    return json.loads((final / FINAL_MARKER).read_text())["metrics"]


def tune_trial(config: dict, shared=None) -> None:
    """The Tune trainable. ``config["trial"]`` is built by the sweep driver (see ``sweep.trial_payload``)."""
    started = time.time()
    trial = config["trial"]
    torch.set_num_threads(max(1, int(trial.get("threads") or 1)))
    output_dir = Path.cwd() / "output"
    training = dict(trial["training"])
    device, seen = trial_device(training.get("device"))
    log.info("trial %s: device %s (Ray GPU ids [%s], CUDA_VISIBLE_DEVICES %s)", trial["key"], device,
             seen["gpu_ids"], seen["cuda_visible_devices"])
    ckpt = tune.get_checkpoint()
    if ckpt is not None and _restore(ckpt, output_dir):
        final = output_dir / "final"
        tune.report({"event": "final", **_final_metrics(final), **_placement(seen, started)},
                    checkpoint=tune.Checkpoint.from_directory(str(final)))
        return

    training["output_dir"] = str(output_dir)
    training["progress"] = False
    training["device"] = device
    dataset = None
    if shared is not None:
        dest = Path.cwd() / "shared"
        paths = unpack(shared, dest)
        # Stage roots are packed as work/<stage dir>: the unpacked work directory is their common parent.
        training["work_dir"] = str(dest / "work")
        dataset = PreparedDataset.open(paths["dataset"])
    cfg = from_dict(TrainingConfig, training)
    # With encoder bundles reserved (resources.eval_workers), a corpus-scale evaluation runs in them. Checked now,
    # not at the first evaluation: a trial restored under other resources must not fail after training.
    ray_options = None
    if trial.get("eval_workers"):
        pg = ray.util.get_current_placement_group()
        try:
            group_pool(pg.bundle_specs if pg is not None else [])
        except TasbRayError as e:
            raise TasbRayError(f"trial {trial['key']} was set up with resources.eval_workers {trial['eval_workers']} "
                               f"but holds no encoder bundles (a sweep continued with other resources? run it with "
                               f"the same resources, or --fresh): {e}") from None
        ray_options = RayOptions(placement_group=True)
    result = run_training(cfg, [TuneReporter(trial)], resume=True, require_cached=True, dataset=dataset,
                          keep_model=True, ray=ray_options)
    final = write_final(cfg, result, trial, output_dir / "final", placement=_placement(seen, started))
    tune.report({"event": "final", **_final_metrics(final), **_placement(seen, started)},
                checkpoint=tune.Checkpoint.from_directory(str(final)))


def write_final(cfg, result, trial: dict, final: Path, placement: dict | None = None) -> Path:
    """The trial's final directory: results, runs, per-query metrics, pipelines; ``final.json`` written last."""
    out = result.output_dir
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    for name in ("config.yaml", "results.json", "metrics.jsonl"):
        if (out / name).is_file():
            shutil.copy2(out / name, final / name)
    shutil.copytree(out / "runs", final / "runs")

    metrics: dict[str, float] = {"step": result.steps}
    for split, values in result.metrics.items():
        metrics.update({f"final_{split}/{k}": v for k, v in values.items()})

    ds = result.dataset if result.dataset is not None else open_data(cfg)
    tables = []
    for split in result.metrics:
        run = read_trec_run(final / "runs" / f"{split}.trec")
        pq = per_query(run, ds.qrels(split), cfg.eval.metrics, cfg.data.rel_level).rename_axis(QUERY_ID)
        pq = pq.reset_index().melt(id_vars=[QUERY_ID], var_name="measure", value_name="value")
        pq.insert(0, "split", split)
        tables.append(pq)
    per_q = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["split", QUERY_ID, "measure", "value"])

    pipe = from_dict(PipelinesConfig, trial.get("pipelines") or {})
    if pipe.enabled:
        pipeline_metrics, pipeline_md = run_trial_pipelines(cfg, result, ds, pipe)
        metrics.update(pipeline_metrics)
        write_text(final / "pipeline.md", pipeline_md)
    per_q.to_parquet(final / PER_QUERY, index=False)
    # The node id says where the trial ran (a multi-node sweep spreads trials; kept out of the numeric metrics).
    write_json(final / FINAL_MARKER, {"key": trial["key"], "group": trial["group"], "values": trial["values"],
                                       "plan_hash": result.plan_hash, "metrics": metrics,
                                       "placement": placement or {},
                                       "node_id": ray.get_runtime_context().get_node_id()})
    return final


def run_trial_pipelines(cfg, result, ds, pipe: PipelinesConfig) -> tuple[dict[str, float], str]:
    """BM25, dense, fusion and re-ranking on ``pipe.split`` with the trained model; metrics and a table."""
    split = pipe.split
    corpus = ds.corpus()
    bm25 = BM25Index(corpus[DOC_ID].to_numpy(), corpus[TEXT].tolist())
    teacher = build_teacher(cfg.teachers.pairwise, corpus=corpus)
    attach_teacher_vectors(teacher, cfg.teachers.pairwise, ds, work_dir(cfg), vector_dtype=cfg.teachers.vector_dtype)
    opts = PipelineOptions(rerank_depth=pipe.rerank_depth, interp_weight=pipe.interp_weight, rrf_k=pipe.rrf_k,
                           rel_level=cfg.data.rel_level)
    res = run_pipelines(ds.queries(split), ds.qrels(split), bm25=bm25, encoder=result.student,
                        dense_index=result.index, corpus_text=dict(zip(corpus[DOC_ID], corpus[TEXT])),
                        reranker=teacher, options=opts)
    metrics: dict[str, float] = {}
    for p, values in res.metrics.items():
        metrics.update({f"pipeline/{p}/{m}": v for m, v in values.items()})
    for stage, stats in res.latency.items():
        metrics.update({f"latency/{stage}/p50_ms": stats.p50_ms, f"latency/{stage}/p99_ms": stats.p99_ms,
                        f"latency/{stage}/mean_ms": stats.mean_ms})
    return metrics, res.to_markdown()
