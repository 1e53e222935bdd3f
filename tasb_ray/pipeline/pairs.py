"""The pairs stage: first-stage candidates → (q, p⁺, p⁻) triples → pairwise-teacher scores, cached once per setting."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from tasb_ray.config import to_dict
from tasb_ray.data import PreparedDataset
from tasb_ray.distributed.options import RayOptions
from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import content_sha256
from tasb_ray.pipeline.cache import cached_stage, dataset_identity, local_model_contents
from tasb_ray.pipeline.context import ray_scope, student_encoder, work_dir
from tasb_ray.pipeline.scoring import score_pairs_ray
from tasb_ray.pipeline.teacher_vectors import attach_teacher_vectors, bi_encoder_configs, ensure_teacher_vectors
from tasb_ray.schema import DOC_ID, QUERY_ID
from tasb_ray.teachers import TeacherConfig, build_teacher
from tasb_ray.teachers.vector_store import DEFAULT_VECTOR_DTYPE
from tasb_ray.training.candidates import first_stage_candidates, write_candidates
from tasb_ray.training.config import CandidatesConfig, TrainingConfig
from tasb_ray.training.pairs import (
    attach_texts,
    build_triples,
    join_scores,
    pair_stats,
    score_triples,
    unique_pairs,
    write_pairs,
)
from tasb_ray.training.teacher_pairs import pairs_from_teacher_file, row_pair_stats, write_row_pairs


def teacher_file_contents(teacher: TeacherConfig) -> dict[str, str]:
    """sha256 of every score file a teacher config reads (``file`` kinds, also inside ensembles), by path.

    A file edited in place must rebuild the stage: its path alone would find the stage built from the old scores.
    """
    out = {}
    if teacher.kind == "file" and teacher.path:
        path = Path(teacher.path)
        if not path.is_file():
            raise TasbRayError(f"{path}: teacher score file not found (teachers.pairwise.path)")
        out[str(path)] = content_sha256(path)
    for member in teacher.components:
        out.update(teacher_file_contents(member))
    return out

# CandidatesConfig fields that postdate cached pairs stages; None means "as before they existed".
LATER_OPTIONS = ("positive_grade", "max_pairs_per_query")


def candidates_key(c: CandidatesConfig) -> dict:
    """The candidates part of the pairs stage key: later options enter it only when set, so stages built before
    they existed keep their key."""
    return {k: v for k, v in to_dict(c).items() if k not in LATER_OPTIONS or v is not None}


def teacher_models(teacher: TeacherConfig) -> list[str]:
    """The model names a teacher config loads (its members' too)."""
    return ([teacher.model] if teacher.model else []) + [m for c in teacher.components for m in teacher_models(c)]


def pairs_stage(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool = False,
                require_cached: bool = False, ray: RayOptions | None = None) -> tuple[Path, dict]:
    """Candidates → triples → pairwise-teacher scores, once per (data, candidates, teacher) setting.

    Bi-encoder members of the teacher score with vectors from the teacher-vectors stage. ``use_ray`` scores the
    pairs on a Ray Data actor pool (:func:`tasb_ray.pipeline.scoring.score_pairs_ray`) and encodes the vectors
    there too; the result is the same, so the stage key does not say how it was built.

    Args:
        cfg: the run config; ds: its prepared dataset.
        use_ray: run the shared work on Ray Data.
        require_cached: raise :class:`TasbRayError` naming the stage instead of building it.
        ray: how the Ray pipelines run (actor pool, cluster address); default :class:`RayOptions`.
    """
    if cfg.candidates.from_teacher_file:
        return _teacher_file_pairs_stage(cfg, ds, require_cached)
    ray = ray or RayOptions()
    c = cfg.candidates
    # The key must stay exactly this: existing pairs stages (SciFact's took 13 min) stay valid.
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "candidates": candidates_key(c),
              "teacher": to_dict(cfg.teachers.pairwise),
              "dense_encoder": cfg.student.model if "dense" in c.sources else None}
    files = teacher_file_contents(cfg.teachers.pairwise)
    if files:  # only keys with score files change: stages of model teachers stay valid
        inputs["teacher_files"] = files
    models = local_model_contents([cfg.student.model if "dense" in c.sources else None,
                                   *teacher_models(cfg.teachers.pairwise)])
    if models:  # only models given by path change the key
        inputs["model_contents"] = models
    if cfg.teachers.vector_dtype != DEFAULT_VECTOR_DTYPE and bi_encoder_configs(cfg.teachers.pairwise):
        # float16 vectors change a bi-encoder's scores; float32 (the default) leaves existing keys as they were.
        inputs["vector_dtype"] = cfg.teachers.vector_dtype

    def build(tmp: Path) -> dict:
        encoder = student_encoder(cfg.student.model, cfg) if "dense" in c.sources else None
        cands = first_stage_candidates(ds, cfg.data.train_split, c.sources, c.depth, encoder=encoder,
                                       show_progress=cfg.progress)
        write_candidates(tmp / "candidates.parquet", cands)
        triples = build_triples(cands, ds.qrels(cfg.data.train_split), c.negatives_per_query, c.seed,
                                c.max_positives, positive_grade=c.positive_grade,
                                max_pairs_per_query=c.max_pairs_per_query)
        triple_stats = dict(triples.attrs.get("stats", {}))
        corpus = ds.corpus()
        queries = ds.queries(cfg.data.train_split)
        with ray_scope(use_ray, ray):
            if use_ray:
                dirs = ensure_teacher_vectors(cfg.teachers.pairwise, ds, work_dir(cfg), use_ray=True, ray=ray,
                                              show_progress=cfg.progress, vector_dtype=cfg.teachers.vector_dtype)
                # rows_per_batch = score_triples' batch size: ensembles normalise over the same whole-query batches.
                scored = score_pairs_ray(attach_texts(unique_pairs(triples), queries, corpus), cfg.teachers.pairwise,
                                         corpus_path=ds.corpus_path, rows_per_batch=256, teacher_vectors=dirs,
                                         vector_dtype=cfg.teachers.vector_dtype, **ray.pool())
                pairs = join_scores(triples, scored)
            else:
                teacher = build_teacher(cfg.teachers.pairwise, corpus=corpus)
                attach_teacher_vectors(teacher, cfg.teachers.pairwise, ds, work_dir(cfg), show_progress=cfg.progress,
                                       vector_dtype=cfg.teachers.vector_dtype)
                pairs = score_triples(triples, queries, corpus, teacher, batch_size=256,
                                      show_progress=cfg.progress)
        write_pairs(tmp / "pairs.parquet", pairs)
        return {"triples": triple_stats, "pairs": pair_stats(pairs)}

    return cached_stage(work_dir(cfg), "pairs", inputs, build, require_cached=require_cached)


def _teacher_file_pairs_stage(cfg: TrainingConfig, ds: PreparedDataset, require_cached: bool) -> tuple[Path, dict]:
    """The pairwise teacher file's own triples and scores, ids as rows of the dataset's tables
    (:mod:`tasb_ray.training.teacher_pairs`): ``pairs.parquet`` of ``q_row, pos_row, neg_row, pos_score, neg_score``."""
    path = Path(cfg.teachers.pairwise.path)
    if not path.is_file():
        raise TasbRayError(f"{path}: teacher file not found (teachers.pairwise.path)")
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split,
              "candidates": to_dict(cfg.candidates), "teacher_file": content_sha256(path), "ids": "rows"}

    def build(tmp: Path) -> dict:
        query_ids = pq.read_table(ds.root / "queries.parquet", columns=[QUERY_ID])[QUERY_ID]
        corpus_ids = pq.read_table(ds.corpus_path, columns=[DOC_ID])[DOC_ID]
        train_qids = ds.qrels(cfg.data.train_split)[QUERY_ID].unique()
        table, counts = pairs_from_teacher_file(path, query_ids, corpus_ids, train_qids)
        write_row_pairs(tmp / "pairs.parquet", table)
        return {"ids": "rows", "teacher_file": counts, "pairs": row_pair_stats(table)}

    return cached_stage(work_dir(cfg), "pairs", inputs, build, require_cached=require_cached)
