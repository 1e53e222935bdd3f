"""Precomputed teacher scores: the TAS-B authors' TSV or a Parquet table, looked up by (qid, pid).

Formats read:

* the authors' TSV ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``
  (via :mod:`tasb_ray.data.teacher_file`);
* Parquet with the pairs columns ``qid, pos_pid, neg_pid, pos_score, neg_score``;
* Parquet with pointwise columns ``qid, pid, score``.

Pairs tables name a (qid, pid) once per triple it occurs in; the teacher keeps one score per
(qid, pid), the mean of its occurrences (the authors' file scores a pair in several triples and
batches, whose fp16 scores can differ in the last digits).

References:
    Hofstätter et al., arXiv 2010.02666 (the published Margin-MSE teacher-score files).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from tasb_ray.data.teacher_file import read_teacher_tsv, write_teacher_tsv
from tasb_ray.errors import DataFormatError, TasbRayError
from tasb_ray.schema import PAIRS_COLUMNS
from tasb_ray.teachers.base import Teacher

POINTWISE_COLUMNS = ("qid", "pid", "score")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def pairs_to_pointwise(pairs: pd.DataFrame) -> pd.DataFrame:
    """``qid, pos_pid, neg_pid, pos_score, neg_score`` → ``qid, pid, score`` (one row per pair, mean score)."""
    pos = pairs[["qid", "pos_pid", "pos_score"]].set_axis(list(POINTWISE_COLUMNS), axis=1)
    neg = pairs[["qid", "neg_pid", "neg_score"]].set_axis(list(POINTWISE_COLUMNS), axis=1)
    return _dedupe(pd.concat([pos, neg], ignore_index=True))


def _dedupe(points: pd.DataFrame) -> pd.DataFrame:
    points = points.astype({"qid": str, "pid": str, "score": np.float64})
    return points.groupby(["qid", "pid"], sort=False, as_index=False)["score"].mean()


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Any supported score file as a pointwise ``qid, pid, score`` table."""
    path = Path(path)
    if not path.is_file():
        raise TasbRayError(f"{path}: teacher score file not found")
    if path.suffix.lower() not in _PARQUET_SUFFIXES:
        return pairs_to_pointwise(read_teacher_tsv(path))
    table = pd.read_parquet(path)
    if all(c in table.columns for c in PAIRS_COLUMNS):
        return pairs_to_pointwise(table)
    if all(c in table.columns for c in POINTWISE_COLUMNS):
        return _dedupe(table[list(POINTWISE_COLUMNS)])
    raise DataFormatError(path, f"columns {list(table.columns)}: expected {list(PAIRS_COLUMNS)} "
                                f"or {list(POINTWISE_COLUMNS)}")


def export_tsv(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a pairs table (``qid, pos_pid, neg_pid, pos_score, neg_score``) as the authors' TSV, atomically."""
    write_teacher_tsv(pairs, path)


class FileTeacher(Teacher):
    """Looks up precomputed scores; a pair absent from the file is an error naming it.

    Args:
        path: a score file (see the module docstring).
        scores: alternatively, a pointwise ``qid, pid, score`` or a pairs table already in memory.
    """

    name = "file"
    required_columns = ("qid", "pid")

    def __init__(self, path: str | os.PathLike | None = None, scores: pd.DataFrame | None = None):
        if (path is None) == (scores is None):
            raise TasbRayError("file teacher needs exactly one of 'path' and 'scores'")
        if scores is None:
            self.source = str(path)
            table = read_scores(path)
        else:
            self.source = "<frame>"
            table = (pairs_to_pointwise(scores) if all(c in scores.columns for c in PAIRS_COLUMNS)
                     else _dedupe(scores[list(POINTWISE_COLUMNS)]))
        self._index = pd.MultiIndex.from_arrays([table["qid"].to_numpy(), table["pid"].to_numpy()])
        self._scores = table["score"].to_numpy(np.float64)

    def __len__(self) -> int:
        return len(self._scores)

    def lookup(self, qids, pids) -> np.ndarray:
        """Scores of aligned (qid, pid) lists; raises naming the first pair not in the file."""
        qids = [str(q) for q in qids]
        pids = [str(p) for p in pids]
        pos = self._index.get_indexer(pd.MultiIndex.from_arrays([qids, pids])) if qids else np.zeros(0, int)
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            n = int((pos < 0).sum())
            raise TasbRayError(f"file teacher {self.source}: no score for qid {qids[i]!r} pid {pids[i]!r}"
                               + (f" (and {n - 1} more pairs)" if n > 1 else ""))
        return self._scores[pos]

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        return self.lookup(batch["qid"].tolist(), batch["pid"].tolist())
