"""One TAS-Balanced run end to end: data → pairs → clusters → training → dev/test evaluation.

The shared stages (pairs, clusters) are cached in the work directory; the run itself writes to its
output directory and resumes from its checkpoint when restarted.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from tasb_ray.config import to_dict
from tasb_ray.data import PreparedDataset, prepare_dataset
from tasb_ray.data.prepare import PrepareOptions, cache_root
from tasb_ray.distributed.options import RayOptions
from tasb_ray.fileio import write_json
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT
from tasb_ray.stages import cached_stage, dataset_identity
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import BEST, EvalData, Reporter, TrainData, Trainer

log = logging.getLogger(__name__)


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


def open_data(cfg: TrainingConfig) -> PreparedDataset:
    d = cfg.data
    return prepare_dataset(d.dataset, cache_dir=d.cache_dir,
                           options=PrepareOptions(dev_fraction=d.dev_fraction, dev_seed=d.dev_seed))


def work_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.work_dir) if cfg.work_dir else cache_root(cfg.data.cache_dir) / "work"


def output_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.output_dir) if cfg.output_dir else Path("runs") / cfg.name


def _encoder(model: str, cfg: TrainingConfig):
    from tasb_ray.models.encoder import BertDot, pick_device

    s = cfg.student
    enc = BertDot(model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                  passage_max_len=s.passage_max_len)
    return enc.to(pick_device(cfg.device)).eval()


def _ray_scope(use_ray: bool, ray: RayOptions):
    """One Ray instance for a stage build (its steps would each start and stop their own); else nothing."""
    if not use_ray:
        return contextlib.nullcontext()
    from tasb_ray.distributed.runtime import ray_session

    return ray_session(ray.address)


def pairs_stage(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool = False,
                require_cached: bool = False, ray: RayOptions | None = None) -> tuple[Path, dict]:
    """Candidates → triples → pairwise-teacher scores, once per (data, candidates, teacher) setting.

    Bi-encoder members of the teacher score with vectors from the teacher-vectors stage. ``use_ray`` scores the
    pairs on a Ray Data actor pool (:func:`tasb_ray.distributed.scoring.score_pairs_ray`) and encodes the vectors
    there too; the result is the same, so the stage key does not say how it was built.

    Args:
        cfg: the run config; ds: its prepared dataset.
        use_ray: run the shared work on Ray Data.
        require_cached: raise :class:`TasbRayError` naming the stage instead of building it.
        ray: how the Ray pipelines run (actor pool, cluster address); default :class:`RayOptions`.
    """
    from tasb_ray.teachers import build_teacher
    from tasb_ray.teachers.vectors import attach_teacher_vectors, ensure_teacher_vectors
    from tasb_ray.training.candidates import first_stage_candidates, write_candidates
    from tasb_ray.training.pairs import (
        attach_texts,
        build_triples,
        join_scores,
        pair_stats,
        score_triples,
        unique_pairs,
        write_pairs,
    )

    ray = ray or RayOptions()
    c = cfg.candidates
    # The key must stay exactly this: existing pairs stages (SciFact's took 13 min) stay valid.
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "candidates": to_dict(c),
              "teacher": to_dict(cfg.teachers.pairwise),
              "dense_encoder": cfg.student.model if "dense" in c.sources else None}

    def build(tmp: Path) -> dict:
        encoder = _encoder(cfg.student.model, cfg) if "dense" in c.sources else None
        cands = first_stage_candidates(ds, cfg.data.train_split, c.sources, c.depth, encoder=encoder,
                                       show_progress=cfg.progress)
        write_candidates(tmp / "candidates.parquet", cands)
        triples = build_triples(cands, ds.qrels(cfg.data.train_split), c.negatives_per_query, c.seed,
                                c.max_positives)
        triple_stats = dict(triples.attrs.get("stats", {}))
        corpus = ds.corpus()
        queries = ds.queries(cfg.data.train_split)
        with _ray_scope(use_ray, ray):
            if use_ray:
                from tasb_ray.distributed.scoring import score_pairs_ray

                dirs = ensure_teacher_vectors(cfg.teachers.pairwise, ds, work_dir(cfg), use_ray=True, ray=ray,
                                              show_progress=cfg.progress)
                # rows_per_batch = score_triples' batch size: ensembles normalise over the same whole-query batches.
                scored = score_pairs_ray(attach_texts(unique_pairs(triples), queries, corpus), cfg.teachers.pairwise,
                                         corpus_path=ds.corpus_path, rows_per_batch=256, teacher_vectors=dirs,
                                         **ray.pool())
                pairs = join_scores(triples, scored)
            else:
                teacher = build_teacher(cfg.teachers.pairwise, corpus=corpus)
                attach_teacher_vectors(teacher, cfg.teachers.pairwise, ds, work_dir(cfg), show_progress=cfg.progress)
                pairs = score_triples(triples, queries, corpus, teacher, batch_size=256,
                                      show_progress=cfg.progress)
        write_pairs(tmp / "pairs.parquet", pairs)
        return {"triples": triple_stats, "pairs": pair_stats(pairs)}

    return cached_stage(work_dir(cfg), "pairs", inputs, build, require_cached=require_cached)


def clusters_stage(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool = False,
                   require_cached: bool = False, ray: RayOptions | None = None) -> tuple[Path, dict]:
    """k-means topic clusters of the training queries, once per (data, encoder, k) setting.

    Queries are encoded with ``encode_bucketed`` in process, or on a Ray Data actor pool with ``use_ray``
    (:func:`tasb_ray.distributed.scoring.encode_queries_ray`, which uses it too): the same vectors, the same
    clusters, the same stage key.

    Args:
        cfg, ds, use_ray, require_cached, ray: see :func:`pairs_stage`.
    """
    from tasb_ray.training.clusters import cluster_queries, cluster_stats, write_clusters

    k = cfg.clusters
    encoder_name = k.encoder or cfg.student.model
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "clusters": to_dict(k),
              "encoder": encoder_name, "pooling": cfg.student.pooling, "normalize": cfg.student.normalize,
              "query_max_len": cfg.student.query_max_len}

    def build(tmp: Path) -> dict:
        queries = ds.queries(cfg.data.train_split)
        if use_ray:
            from tasb_ray.distributed.scoring import encode_queries_ray

            vectors = encode_queries_ray(queries, encoder_name, pooling=cfg.student.pooling,
                                         normalize=cfg.student.normalize, query_max_len=cfg.student.query_max_len,
                                         **(ray or RayOptions()).pool())
        else:
            from tasb_ray.distributed.batch_encoder import encode_bucketed

            vectors = encode_bucketed(_encoder(encoder_name, cfg), queries[TEXT].tolist(), "query")
        assignment = cluster_queries(queries[QUERY_ID].tolist(), vectors, k.k, k.seed, niter=k.niter)
        write_clusters(tmp / "clusters.parquet", assignment)
        return cluster_stats(assignment, k.k)

    return cached_stage(work_dir(cfg), "clusters", inputs, build, require_cached=require_cached)


def _stage_info(stage_dir: Path) -> dict:
    from tasb_ray.stages import STAGE_FILE

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
    from tasb_ray.stages import StageNotPrepared

    ds = open_data(cfg)
    try:  # all there: nothing to build, so no Ray to start
        return _shared_stages(cfg, ds, use_ray, ray, require_cached=True)
    except StageNotPrepared:
        pass
    # One Ray instance for every build below (each would otherwise start and stop its own).
    with _ray_scope(use_ray, ray or RayOptions()):
        return _shared_stages(cfg, ds, use_ray, ray, require_cached=False)


def _shared_stages(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool, ray: RayOptions | None,
                   require_cached: bool) -> dict:
    from tasb_ray.teachers.vectors import ensure_teacher_vectors

    opts = {"use_ray": use_ray, "ray": ray, "require_cached": require_cached}
    stages: dict = {"data": {"path": str(ds.root), "name": ds.name, "splits": ds.splits}}
    pairs_dir, pairs_info = pairs_stage(cfg, ds, **opts)
    stages["pairs"] = {"path": str(pairs_dir), **pairs_info}
    roles = {"pairwise": cfg.teachers.pairwise}
    if cfg.alpha > 0 and cfg.teachers.inbatch is not None:
        roles["inbatch"] = cfg.teachers.inbatch
    for role, teacher_cfg in roles.items():
        dirs = ensure_teacher_vectors(teacher_cfg, ds, work_dir(cfg), show_progress=cfg.progress, **opts)
        for member, d in dirs.items():
            stages[f"teacher-vectors/{role}/{member}"] = {"path": str(d), **_stage_info(d)}
    if cfg.sampler.uses_clusters:
        clusters_dir, clusters_info = clusters_stage(cfg, ds, **opts)
        stages["clusters"] = {"path": str(clusters_dir), **clusters_info}
    return stages


def eval_data(ds: PreparedDataset, split: str, corpus: pd.DataFrame) -> EvalData:
    return EvalData(split, corpus, ds.queries(split), ds.qrels(split))


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
    from tasb_ray.teachers import build_teacher
    from tasb_ray.teachers.vectors import attach_teacher_vectors
    from tasb_ray.training.clusters import read_clusters
    from tasb_ray.training.pairs import read_pairs

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
    queries = ds.queries(cfg.data.train_split)
    data = TrainData(read_pairs(pairs_dir / "pairs.parquet"), dict(zip(queries[QUERY_ID], queries[TEXT])),
                     dict(zip(corpus[DOC_ID], corpus[TEXT])), clusters)
    teacher = None
    if cfg.alpha > 0:
        # Vectors from the shared stage: the trainer's precompute then finds every training text already encoded.
        teacher = build_teacher(cfg.teachers.inbatch, corpus=corpus)
        vector_dirs = attach_teacher_vectors(teacher, cfg.teachers.inbatch, ds, work_dir(cfg), use_ray=use_ray,
                                             ray=ray, require_cached=require_cached, show_progress=cfg.progress)
        if vector_dirs:
            stages["teacher_vectors"] = {member: str(d) for member, d in vector_dirs.items()}
    dev = eval_data(ds, cfg.data.dev_split, corpus) if cfg.eval.every else None
    trainer = Trainer(cfg, data, out, teacher, dev=dev, reporters=reporters)
    result = trainer.fit(resume=resume)

    # The model that is reported: the best on dev when dev was evaluated during training, else the last.
    if cfg.eval.every and (out / BEST).is_dir():
        from tasb_ray.training.trainer import load_weights

        load_weights(trainer.student, out / BEST)
    splits = [cfg.data.dev_split] + ([cfg.data.test_split] if cfg.eval.test else [])
    metrics = trainer.evaluate_splits([eval_data(ds, s, corpus) for s in splits], out / "runs")
    for split, values in metrics.items():
        for r in reporters:
            r.on_eval(result.steps, f"final_{split}", values)
    write_json(out / "results.json", {"metrics": metrics, "plan_hash": result.plan_hash, "steps": result.steps,
                                      "best_step": result.best_step, "stages": stages,
                                      "selected": "best" if cfg.eval.every else "last"})
    # Model cards (README.md) for the model directories; the selected one carries the metrics.
    from tasb_ray.models.card import write_run_cards

    write_run_cards(out, to_dict(cfg), metrics, plan_hash=result.plan_hash,
                    selected=BEST if cfg.eval.every and (out / BEST).is_dir() else "model",
                    command=f"tasb-ray train {out / 'config.yaml'}")
    kept = {"student": trainer.student, "index": trainer.last_index, "dataset": ds} if keep_model else {}
    return RunResult(out, metrics, result.plan_hash, result.steps, result.best_step, stages, result.history, **kept)
