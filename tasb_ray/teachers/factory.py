"""Building teachers from :class:`TeacherConfig`, in the driver or inside a fresh worker process."""

from __future__ import annotations

import os
from typing import Any, Mapping

import pandas as pd

from tasb_ray.errors import ConfigError
from tasb_ray.schema import DOC_ID, TEXT
from tasb_ray.teachers.base import Teacher
from tasb_ray.teachers.config import TeacherConfig


def build_teacher(cfg: TeacherConfig | Mapping[str, Any], corpus: pd.DataFrame | None = None) -> Teacher:
    """The teacher ``cfg`` describes.

    Args:
        cfg: a config, or a mapping for :meth:`TeacherConfig.from_dict`.
        corpus: ``doc_id, text`` frame; needed by ``bm25`` (also inside an ensemble) for its statistics.
    """
    cfg = TeacherConfig.from_dict(cfg) if not isinstance(cfg, TeacherConfig) else cfg
    # Teacher classes are imported by kind (lazy): a file or BM25 teacher then loads no torch or transformers.
    common = dict(max_query_len=cfg.max_query_len, max_passage_len=cfg.max_passage_len,
                  batch_size=cfg.batch_size, device=cfg.device)
    if cfg.kind == "bm25":
        from tasb_ray.teachers.bm25 import BM25Teacher

        if corpus is None:
            raise ConfigError("teacher kind 'bm25' needs the corpus (doc_id, text) for its statistics")
        return BM25Teacher(corpus=corpus, k1=cfg.k1, b=cfg.b)
    if cfg.kind == "bi-encoder":
        from tasb_ray.teachers.bi_encoder import BiEncoderTeacher

        return BiEncoderTeacher(cfg.model, similarity=cfg.similarity, **common)
    if cfg.kind == "cross-encoder":
        from tasb_ray.teachers.cross_encoder import CrossEncoderTeacher

        return CrossEncoderTeacher(cfg.model, **common)
    if cfg.kind == "colbert":
        from tasb_ray.teachers.colbert import ColBERTTeacher

        return ColBERTTeacher(cfg.model, projection=cfg.projection, **common)
    if cfg.kind == "file":
        from tasb_ray.teachers.precomputed import FileTeacher

        return FileTeacher(cfg.path)
    if cfg.kind == "ensemble":
        from tasb_ray.teachers.ensemble import EnsembleTeacher

        return EnsembleTeacher([build_teacher(c, corpus) for c in cfg.components],
                               [c.weight for c in cfg.components])
    raise ConfigError(f"unknown teacher kind {cfg.kind!r}")  # unreachable: validated by TeacherConfig


def build_teacher_from_paths(cfg: TeacherConfig | Mapping[str, Any],
                             corpus_path: str | os.PathLike | None = None) -> Teacher:
    """:func:`build_teacher` from what a fresh worker process can be handed: a config and a path.

    Args:
        cfg: a config or its dict form.
        corpus_path: the prepared corpus Parquet (``PreparedDataset.corpus_path``); read only when the
            config needs the corpus.
    """
    cfg = TeacherConfig.from_dict(cfg) if not isinstance(cfg, TeacherConfig) else cfg
    corpus = None
    if cfg.needs_corpus():
        if corpus_path is None:
            raise ConfigError(f"teacher kind {cfg.kind!r} needs the corpus: pass corpus_path")
        corpus = pd.read_parquet(corpus_path, columns=[DOC_ID, TEXT])
    return build_teacher(cfg, corpus)


class TeacherActor:
    """A Ray Data callable class building its teacher once per actor from a config and a corpus path.

    ``ds.map_batches(TeacherActor, fn_constructor_kwargs={"cfg": cfg.to_dict(), "corpus_path": path},
    batch_format="pandas", ...)``: the config travels as a plain dict, the corpus as a path, so no model
    or corpus is pickled into the task.

    Args:
        cfg: a config or its dict form.
        corpus_path: see :func:`build_teacher_from_paths`.
    """

    def __init__(self, cfg: TeacherConfig | Mapping[str, Any], corpus_path: str | None = None):
        self.teacher = build_teacher_from_paths(cfg, corpus_path)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.teacher(batch)
