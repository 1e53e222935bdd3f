"""One TAS-Balanced run end to end: data → pairs → clusters → training → dev/test evaluation.

The shared stages (pairs, clusters, teacher vectors) are cached in the work directory; the run itself writes to
its output directory and resumes from its checkpoint when restarted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from tasb_ray.config import to_dict
from tasb_ray.data import PreparedDataset
from tasb_ray.distributed.options import RayOptions
from tasb_ray.fileio import write_json
from tasb_ray.losses.combined import uses_inbatch
from tasb_ray.models.card import write_run_cards
from tasb_ray.pipeline.cache import STAGE_FILE, StageNotPrepared
from tasb_ray.pipeline.clusters import clusters_stage
from tasb_ray.pipeline.context import open_data, output_dir, ray_scope, work_dir
from tasb_ray.pipeline.pairs import pairs_stage
from tasb_ray.pipeline.teacher_vectors import attach_teacher_vectors, ensure_teacher_vectors
from tasb_ray.schema import DOC_ID, PAIRS_COLUMNS, QUERY_ID, TEXT
from tasb_ray.tables import read_columns
from tasb_ray.teachers import build_teacher
from tasb_ray.training.clusters import read_clusters
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.pairs import read_pairs
from tasb_ray.training.sampling import PairIds
from tasb_ray.training.teacher_pairs import read_row_pairs
from tasb_ray.training.trainer import BEST, EvalData, Reporter, TrainData, Trainer, load_weights

log = logging.getLogger(__name__)

# Re-exported: callers of a run reach its stages from here.
__all__ = ["RunResult", "clusters_stage", "eval_data", "open_data", "output_dir", "pairs_stage",
           "prepare_shared_stages", "run_training", "work_dir"]


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, dict[str, float]]          # split -> metric -> value, for the selected model
    plan_hash: str
    steps: int
    best_step: int | None
    stages: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    # Only with run_training(keep_model=True): the selected student, its corpus index and the dataset, for
    # callers that go on to use them (a sweep trial's retrieval pipelines) without reloading or re-encoding.
    student: object | None = field(default=None, repr=False)
    index: object | None = field(default=None, repr=False)
    dataset: PreparedDataset | None = field(default=None, repr=False)


def _stage_info(stage_dir: Path) -> dict:
    return json.loads((stage_dir / STAGE_FILE).read_text())["info"]


def prepare_shared_stages(cfg: TrainingConfig, use_ray: bool = False, ray: RayOptions | None = None) -> dict:
    """Build (or find) every shared stage a run of ``cfg`` reads, so its trials only read them.

    Data preparation, the pairs stage, the teacher-vectors stages of both teacher roles (the in-batch one only
    when ``alpha > 0``) and, when the sampler uses clusters, the clusters stage. A sweep driver calls this once per
    distinct config before launching trials with ``run_training(..., require_cached=True)``.

    Args:
        cfg: the run config.
        use_ray: run the shared work on Ray Data.
        ray: how the Ray pipelines run; default :class:`RayOptions`.

    Returns:
        Stage name → ``{"path": directory, ...info}``: ``data`` (the prepared dataset), ``pairs``, ``clusters``
        (when used) and ``teacher-vectors/<role>/<member>`` per bi-encoder member of each teacher role (e.g.
        ``teacher-vectors/inbatch/teacher.components[1]``; both roles may name one directory).
    """
    ds = open_data(cfg)
    try:  # all there: nothing to build, so no Ray to start
        return _shared_stages(cfg, ds, use_ray, ray, require_cached=True)
    except StageNotPrepared:
        pass
    # One Ray instance for every build below (each would otherwise start and stop its own).
    with ray_scope(use_ray, ray or RayOptions()):
        return _shared_stages(cfg, ds, use_ray, ray, require_cached=False)


def _shared_stages(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool, ray: RayOptions | None,
                   require_cached: bool) -> dict:
    opts = {"use_ray": use_ray, "ray": ray, "require_cached": require_cached}
    stages: dict = {"data": {"path": str(ds.root), "name": ds.name, "splits": ds.splits}}
    pairs_dir, pairs_info = pairs_stage(cfg, ds, **opts)
    stages["pairs"] = {"path": str(pairs_dir), **pairs_info}
    roles = {"pairwise": cfg.teachers.pairwise}
    if uses_inbatch(cfg.alpha) and cfg.teachers.inbatch is not None:
        roles["inbatch"] = cfg.teachers.inbatch
    for role, teacher_cfg in roles.items():
        dirs = ensure_teacher_vectors(teacher_cfg, ds, work_dir(cfg), show_progress=cfg.progress,
                                      vector_dtype=cfg.teachers.vector_dtype, **opts)
        for member, d in dirs.items():
            stages[f"teacher-vectors/{role}/{member}"] = {"path": str(d), **_stage_info(d)}
    if cfg.sampler.uses_clusters:
        clusters_dir, clusters_info = clusters_stage(cfg, ds, **opts)
        stages["clusters"] = {"path": str(clusters_dir), **clusters_info}
    return stages


def _plain(stats: dict) -> dict:
    """The JSON-ready part of the evaluation index's statistics (where it was encoded, the index, timings)."""
    return {k: v for k, v in stats.items() if isinstance(v, (str, int, float, bool, type(None), dict))}


def train_data(cfg: TrainingConfig, ds: PreparedDataset, pairs_dir: Path, clusters: pd.DataFrame | None) -> TrainData:
    """The trainer's pairs and texts. Row-coded pairs (the teacher-file source) keep ids and texts as Arrow columns
    of the dataset's own tables, looked up by row; string pairs get dicts keyed by id."""
    if cfg.candidates.from_teacher_file:
        # The Arrow table itself, renamed (no copy): the sampler keeps its int32 row columns as views.
        pairs = read_row_pairs(pairs_dir / "pairs.parquet").rename_columns(list(PAIRS_COLUMNS))
        queries = read_columns(ds.root / "queries.parquet", [QUERY_ID, TEXT])
        corpus = read_columns(ds.corpus_path, [DOC_ID, TEXT])
        return TrainData(pairs, queries[TEXT], corpus[TEXT], clusters,
                         ids=PairIds(queries[QUERY_ID], corpus[DOC_ID]))
    queries = ds.queries(cfg.data.train_split)
    corpus = ds.corpus()
    return TrainData(read_pairs(pairs_dir / "pairs.parquet"), dict(zip(queries[QUERY_ID], queries[TEXT])),
                     dict(zip(corpus[DOC_ID], corpus[TEXT])), clusters)


def eval_data(ds: PreparedDataset, split: str, corpus: pd.DataFrame) -> EvalData:
    return EvalData(split, corpus, ds.queries(split), ds.qrels(split), dataset=ds)


def run_training(cfg: TrainingConfig, reporters: Sequence[Reporter] = (), resume: bool = True,
                 use_ray: bool = False, require_cached: bool = False, ray: RayOptions | None = None,
                 dataset: PreparedDataset | None = None, keep_model: bool = False) -> RunResult:
    """One run: shared stages (built or found), training, evaluation of the selected model.

    Args:
        cfg: the run config.
        reporters: training callbacks.
        resume: continue from the output directory's checkpoint when there is one.
        use_ray: build missing shared stages on Ray Data.
        require_cached: a missing shared stage raises :class:`TasbRayError` naming it (sweep trials, whose
            shared stages :func:`prepare_shared_stages` built beforehand).
        ray: how the Ray pipelines run; default :class:`RayOptions`.
        dataset: the prepared dataset to use instead of opening ``cfg.data`` (a trial on a node that was
            shipped the driver's copy).
        keep_model: return the selected student, its corpus index and the dataset in the result.
    """
    ds = dataset if dataset is not None else open_data(cfg)
    out = output_dir(cfg)
    pairs_dir, pairs_info = pairs_stage(cfg, ds, use_ray=use_ray, require_cached=require_cached, ray=ray)
    stages = {"pairs": {"path": str(pairs_dir), **pairs_info}}
    clusters = None
    if cfg.sampler.uses_clusters:
        clusters_dir, clusters_info = clusters_stage(cfg, ds, use_ray=use_ray, require_cached=require_cached,
                                                     ray=ray)
        stages["clusters"] = {"path": str(clusters_dir), **clusters_info}
        clusters = read_clusters(clusters_dir / "clusters.parquet")

    corpus = ds.corpus()
    data = train_data(cfg, ds, pairs_dir, clusters)
    teacher = None
    if uses_inbatch(cfg.alpha):
        # Vectors from the shared stage, memory-mapped: the trainer's precompute then finds every training text
        # already encoded, and a batch reads only its own rows.
        teacher = build_teacher(cfg.teachers.inbatch, corpus=corpus)
        vector_dirs = attach_teacher_vectors(teacher, cfg.teachers.inbatch, ds, work_dir(cfg), use_ray=use_ray,
                                             ray=ray, require_cached=require_cached, show_progress=cfg.progress,
                                             vector_dtype=cfg.teachers.vector_dtype)
        if vector_dirs:
            stages["teacher_vectors"] = {member: str(d) for member, d in vector_dirs.items()}
    dev = eval_data(ds, cfg.data.dev_split, corpus) if cfg.eval.every else None
    trainer = Trainer(cfg, data, out, teacher, dev=dev, reporters=reporters, ray=ray)
    result = trainer.fit(resume=resume)

    # The model that is reported: the best on dev when dev was evaluated during training, else the last.
    if cfg.eval.every and (out / BEST).is_dir():
        load_weights(trainer.student, out / BEST)
    splits = [cfg.data.dev_split] + ([cfg.data.test_split] if cfg.eval.test else [])
    metrics = trainer.evaluate_splits([eval_data(ds, s, corpus) for s in splits], out / "runs")
    for split, values in metrics.items():
        for r in reporters:
            r.on_eval(result.steps, f"final_{split}", values)
    quality = {k: v for k, v in stages.get("clusters", {}).get("quality", {}).items() if isinstance(v, (int, float))}
    if quality:
        for r in reporters:
            r.on_eval(0, "clusters", quality)
    inbatch_scale = None
    if trainer.teacher is not None:
        inbatch_scale = {"mode": trainer.teacher.mode.value, "factor": trainer.teacher.factor,
                         "calibration": trainer.teacher.calibration_stats}
    write_json(out / "results.json", {"metrics": metrics, "plan_hash": result.plan_hash, "steps": result.steps,
                                      "best_step": result.best_step, "stages": stages,
                                      "selected": "best" if cfg.eval.every else "last",
                                      "plan_stats": trainer.plan_stats, "inbatch_scale": inbatch_scale,
                                      "eval_index": _plain(trainer.eval_index_stats)})
    # Model cards (README.md) for the model directories; the selected one carries the metrics.
    write_run_cards(out, to_dict(cfg), metrics, plan_hash=result.plan_hash,
                    selected=BEST if cfg.eval.every and (out / BEST).is_dir() else "model",
                    command=f"tasb-ray train {out / 'config.yaml'}")
    kept = {"student": trainer.student, "index": trainer.last_index, "dataset": ds} if keep_model else {}
    return RunResult(out, metrics, result.plan_hash, result.steps, result.best_step, stages, result.history, **kept)
