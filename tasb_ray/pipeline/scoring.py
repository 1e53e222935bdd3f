"""Pairwise-teacher scoring on a Ray Data actor pool: the Ray path of the pairs stage.

:func:`score_pairs_ray` gives the same scores as the in-process :func:`tasb_ray.training.pairs.score_pairs`, also
for teachers that normalise per query (ensembles): pairs are sorted and packed into the same whole-query batches
(:func:`tasb_ray.training.pairs.query_batches`), Ray Data blocks hold whole packed batches, ``map_batches`` with
``batch_size=None`` hands each actor whole blocks (:func:`tasb_ray.distributed.texts.run_packed_blocks`), and the
actor calls the teacher once per packed batch. No shuffle (``groupby``) is needed, and the actor checks that every
packed batch arrived whole.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import pandas as pd

from tasb_ray.distributed.texts import POS, run_packed_blocks, set_threads
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.pipeline.teacher_vectors import attach_vectors_from_dirs
from tasb_ray.teachers.config import TeacherConfig
from tasb_ray.teachers.factory import TeacherActor
from tasb_ray.teachers.vector_store import DEFAULT_VECTOR_DTYPE
from tasb_ray.training.pairs import PAIR_KEY, query_batches

PAIR_TEXT_COLUMNS = ("qid", "pid", "query", "passage")
_BATCH, _SIZE, _POS = "_batch", "_batch_rows", POS


class PackedTeacherActor(TeacherActor):
    """:class:`TeacherActor` for blocks of packed batches: scores each ``_batch`` group with one teacher call.

    Input columns: ``qid, pid, query, passage`` plus ``_batch`` (packed batch id), ``_batch_rows`` (its size) and
    ``_pos`` (row position in the caller's table). Output: ``_pos, score``. ``teacher_vectors`` (bi-encoder member
    path -> teacher-vectors stage directory) are memory-mapped into the teacher once (as ``vector_dtype``), so no
    actor encodes the corpus and the actors of a node share the vectors' pages.
    """

    def __init__(self, cfg: Mapping[str, Any], corpus_path: str | None = None, threads: int | None = None,
                 teacher_vectors: Mapping[str, str] | None = None, vector_dtype: str = DEFAULT_VECTOR_DTYPE):
        set_threads(threads)
        super().__init__(cfg, corpus_path)
        if teacher_vectors:
            attach_vectors_from_dirs(self.teacher, cfg, teacher_vectors, vector_dtype)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out_pos, out_score = [], []
        for _, group in batch.groupby(_BATCH, sort=False):
            expected = int(group[_SIZE].iloc[0])
            if len(group) != expected:
                raise TasbRayError(f"packed teacher batch split by Ray Data: {len(group)} of {expected} rows")
            frame = group[list(PAIR_TEXT_COLUMNS)].reset_index(drop=True)
            scores = np.asarray(self.teacher.score_batch(frame), dtype=np.float64).reshape(-1)
            if len(scores) != len(frame):
                raise TasbRayError(f"teacher returned {len(scores)} scores for a batch of {len(frame)} rows")
            out_pos.append(group[_POS].to_numpy())
            out_score.append(scores)
        if not out_pos:
            return pd.DataFrame({_POS: np.zeros(0, dtype=np.int64), "score": np.zeros(0)})
        return pd.DataFrame({_POS: np.concatenate(out_pos), "score": np.concatenate(out_score)})



def score_pairs_ray(pairs_with_texts: pd.DataFrame, teacher_cfg, corpus_path: str | os.PathLike | None = None,
                    num_actors: int | None = None, rows_per_batch: int = 256, batches_per_block: int = 8,
                    use_gpu: bool | str = "auto", cpus_per_actor: int | None = None,
                    address: str | None = None, teacher_vectors: Mapping[str, str] | None = None,
                    vector_dtype: str = DEFAULT_VECTOR_DTYPE) -> pd.DataFrame:
    """Teacher scores of ``qid, pid, query, passage`` rows on a Ray Data actor pool → ``qid, pid, score``.

    Equal to :func:`tasb_ray.training.pairs.score_pairs` with ``batch_size=rows_per_batch`` (same sort, same
    whole-query batches, one teacher call per batch), so per-query normalising ensembles give the same scores.
    With one actor the batches also run in the same order. With several, neural teachers that cache vectors by
    id (bi-encoder) can differ by float rounding (a vector depends on the padding of the batch that first
    encoded it), which per-query z-normalisation magnifies where a teacher's scores of a query are near-tied.

    Args:
        pairs_with_texts: ``qid, pid, query, passage`` (e.g. from :func:`tasb_ray.training.pairs.attach_texts`);
            duplicate (qid, pid) rows are scored once.
        teacher_cfg: a :class:`tasb_ray.teachers.TeacherConfig` or its dict form.
        corpus_path: the prepared corpus Parquet, for teachers that need corpus statistics (bm25); every actor
            reads it, so on a multi-node cluster it must be on a filesystem all nodes see.
        num_actors: actor pool size (default: one per GPU, else one per CPU).
        rows_per_batch: rows per teacher call (whole queries; see ``query_batches``).
        batches_per_block: packed batches per Ray Data block (fewer, larger blocks cost less scheduling).
        use_gpu: ``auto`` (GPUs when the cluster has them), True or False.
        cpus_per_actor: torch threads per CPU actor (default: the actor's share of the CPUs).
        address: Ray cluster to join when Ray is not initialised (else a local instance, shut down afterwards).
        teacher_vectors: bi-encoder member path -> teacher-vectors stage directory (from
            :func:`tasb_ray.pipeline.teacher_vectors.ensure_teacher_vectors`), loaded by every actor; like ``corpus_path``
            it must be on a filesystem the actors see. The scores then do not depend on the number of actors.
        vector_dtype: the stored dtype of those vectors (``teachers.vector_dtype``).

    Returns:
        ``qid, pid, score`` sorted by qid, pid (scores float64).
    """
    missing = [c for c in PAIR_TEXT_COLUMNS if c not in pairs_with_texts.columns]
    if missing:
        raise ConfigError(f"score_pairs_ray: pairs lack column(s) {missing} (need {list(PAIR_TEXT_COLUMNS)})")
    if not isinstance(batches_per_block, int) or batches_per_block < 1:
        raise ConfigError(f"batches_per_block must be an integer >= 1, got {batches_per_block!r}")
    cfg = teacher_cfg if isinstance(teacher_cfg, TeacherConfig) else TeacherConfig.from_dict(teacher_cfg)
    frame = pd.DataFrame({"qid": pairs_with_texts["qid"].astype(str).to_numpy(dtype=object),
                          "pid": pairs_with_texts["pid"].astype(str).to_numpy(dtype=object),
                          "query": pairs_with_texts["query"].to_numpy(dtype=object),
                          "passage": pairs_with_texts["passage"].to_numpy(dtype=object)})
    frame = frame.drop_duplicates(list(PAIR_KEY)).sort_values(list(PAIR_KEY), kind="stable").reset_index(drop=True)
    if frame.empty:
        return pd.DataFrame({"qid": [], "pid": [], "score": np.zeros(0)}).astype({"qid": object, "pid": object})
    ranges = query_batches(frame["qid"].to_numpy(), rows_per_batch)
    batch_id = np.empty(len(frame), dtype=np.int64)
    batch_rows = np.empty(len(frame), dtype=np.int64)
    for b, (start, end) in enumerate(ranges):
        batch_id[start:end] = b
        batch_rows[start:end] = end - start
    frame[_BATCH], frame[_SIZE], frame[_POS] = batch_id, batch_rows, np.arange(len(frame), dtype=np.int64)
    blocks = [frame.iloc[ranges[i][0]:ranges[min(i + batches_per_block, len(ranges)) - 1][1]].reset_index(drop=True)
              for i in range(0, len(ranges), batches_per_block)]

    # preserve_order: blocks reach an actor in table order, so a teacher with a per-id vector cache (bi-encoder)
    # fills it in the same order as the in-process loop (its vectors depend on their first batch's padding).
    kwargs = {"cfg": cfg.to_dict(), "corpus_path": str(corpus_path) if corpus_path is not None else None,
              "teacher_vectors": {k: str(v) for k, v in (teacher_vectors or {}).items()}, "vector_dtype": vector_dtype}
    scores, seen = run_packed_blocks(blocks, PackedTeacherActor, kwargs, len(frame), num_actors=num_actors,
                                     use_gpu=use_gpu, cpus_per_actor=cpus_per_actor, address=address)
    if (seen != 1).any():
        raise TasbRayError(f"score_pairs_ray: {int((seen == 0).sum())} pairs unscored, "
                           f"{int((seen > 1).sum())} scored twice")
    return pd.DataFrame({"qid": frame["qid"].to_numpy(), "pid": frame["pid"].to_numpy(), "score": scores})
