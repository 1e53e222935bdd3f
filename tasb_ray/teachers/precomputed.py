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
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasb_ray.data.ids import IdCodes
from tasb_ray.data.teacher_file import read_teacher_table, write_teacher_tsv
from tasb_ray.errors import DataFormatError, TasbRayError
from tasb_ray.schema import PAIRS_COLUMNS
from tasb_ray.teachers.base import Teacher

POINTWISE_COLUMNS = ("qid", "pid", "score")
_PARQUET_SUFFIXES = (".parquet", ".pq")


def _column(table: pa.Table | pd.DataFrame, name: str, source: str) -> pa.ChunkedArray | pa.Array:
    """An id column as Arrow strings (numbers as their text, as ``astype(str)`` writes them); nulls are an error."""
    if isinstance(table, pd.DataFrame):
        col = table[name]
        if col.isna().any():
            raise DataFormatError(source, f"column {name!r} has {int(col.isna().sum())} missing ids")
        return pa.array(col.astype(str).to_numpy(dtype=object), pa.string())
    col = table[name]
    if col.null_count:
        raise DataFormatError(source, f"column {name!r} has {col.null_count} missing ids")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())  # one type for the chunks joined below (a no-op for string)
    return pa.array(pd.Series(col.to_numpy(zero_copy_only=False)).astype(str).to_numpy(dtype=object), pa.string())


def _scores(table: pa.Table | pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    if isinstance(table, pd.DataFrame):
        return np.concatenate([table[n].to_numpy(dtype=np.float64) for n in names])
    return np.concatenate([np.asarray(table[n].to_numpy(), dtype=np.float64) for n in names])


def _chunks(values: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    # pa.chunked_array of ChunkedArrays would convert them value by value: join their chunks instead.
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]


def _encode(values: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(int32 codes, the distinct values) of a string column: Arrow's hash, no Python object per row."""
    if isinstance(values, pa.ChunkedArray) and values.num_chunks == 0:
        return np.zeros(0, dtype=np.int32), pa.array([], pa.string())
    enc = pc.dictionary_encode(values)
    if isinstance(enc, pa.ChunkedArray):
        enc = enc.combine_chunks()  # one dictionary for all chunks
    return enc.indices.to_numpy(), enc.dictionary


class PairScores:
    """One score per (qid, pid): the mean over the rows naming it, held as integer codes (no string per row).

    ``qids`` and ``pids`` are the distinct ids (Arrow strings); pair ``i`` is ``keys[i] = q * len(pids) + p``
    (sorted, for a binary search) with score ``scores[i]``.
    """

    def __init__(self, qid_codes: np.ndarray, qids: pa.Array, pid_codes: np.ndarray, pids: pa.Array,
                 scores: np.ndarray):
        key = qid_codes.astype(np.int64) * max(len(pids), 1) + pid_codes
        # pandas' groupby mean on the integer key: the groups, their row order and the summation are those of the
        # former (qid, pid) string groupby, so the means are bit-identical.
        mean = pd.Series(scores, copy=False).groupby(key, sort=False).mean()
        order = np.argsort(mean.index.to_numpy(), kind="stable")
        self.keys = mean.index.to_numpy()[order]
        self.scores = mean.to_numpy(dtype=np.float64)[order]
        self.qids, self.pids = IdCodes(qids), IdCodes(pids)

    def __len__(self) -> int:
        return len(self.scores)

    def positions(self, qids, pids) -> np.ndarray:
        """Index into ``scores`` of each aligned (qid, pid), -1 where the pair has no score."""
        q, p = self.qids.codes(qids), self.pids.codes(pids)
        if not len(self.keys):
            return np.full(len(q), -1, dtype=np.int64)
        key = q * len(self.pids) + p
        pos = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        # An unknown id (code -1) can still make a valid key (q * n - 1): the code checks rule it out.
        return np.where((q >= 0) & (p >= 0) & (self.keys[pos] == key), pos, -1)

    def to_frame(self) -> pd.DataFrame:
        """The pointwise ``qid, pid, score`` table (strings at this edge), sorted by codes."""
        n = max(len(self.pids), 1)
        return pd.DataFrame({"qid": self.qids.take(self.keys // n), "pid": self.pids.take(self.keys % n),
                             "score": self.scores})


def pair_scores(table: pa.Table | pd.DataFrame, source: str) -> PairScores:
    """:class:`PairScores` of a pairs table (``qid, pos_pid, neg_pid, pos_score, neg_score``: a positive and a
    negative row per triple, positives first) or of a pointwise one (``qid, pid, score``)."""
    names = list(table.columns) if isinstance(table, pd.DataFrame) else table.column_names
    if all(c in names for c in PAIRS_COLUMNS):
        q, qids = _encode(_column(table, "qid", source))
        p, pids = _encode(pa.chunked_array(_chunks(_column(table, "pos_pid", source))
                                           + _chunks(_column(table, "neg_pid", source)), pa.string()))
        return PairScores(np.concatenate([q, q]), qids, p, pids, _scores(table, ("pos_score", "neg_score")))
    if all(c in names for c in POINTWISE_COLUMNS):
        q, qids = _encode(_column(table, "qid", source))
        p, pids = _encode(_column(table, "pid", source))
        return PairScores(q, qids, p, pids, _scores(table, ("score",)))
    raise DataFormatError(source, f"columns {names}: expected {list(PAIRS_COLUMNS)} or {list(POINTWISE_COLUMNS)}")


def read_scores(path: str | os.PathLike) -> pd.DataFrame:
    """Any supported score file as a pointwise ``qid, pid, score`` table (one row per pair, in code order)."""
    return _read_pair_scores(path).to_frame()


def _read_pair_scores(path: str | os.PathLike) -> PairScores:
    path = Path(path)
    if not path.is_file():
        raise TasbRayError(f"{path}: teacher score file not found")
    if path.suffix.lower() not in _PARQUET_SUFFIXES:
        return pair_scores(read_teacher_table(path), str(path))
    return pair_scores(pq.read_table(path), str(path))


def export_tsv(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a pairs table (``qid, pos_pid, neg_pid, pos_score, neg_score``) as the authors' TSV, atomically."""
    write_teacher_tsv(pairs, path)


class FileTeacher(Teacher):
    """Looks up precomputed scores; a pair absent from the file is an error naming it.

    Ids are held as integer codes (Arrow dictionary encoding, :class:`tasb_ray.data.ids.IdCodes` for lookups), not
    as a Python string per (qid, pid): MS MARCO's file has ~40M triples.

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
            self._pairs = _read_pair_scores(path)
        else:
            self.source = "<frame>"
            self._pairs = pair_scores(scores, self.source)

    def __len__(self) -> int:
        return len(self._pairs)

    def lookup(self, qids, pids) -> np.ndarray:
        """Scores of aligned (qid, pid) lists; raises naming the first pair not in the file."""
        qids = [str(q) for q in qids]
        pids = [str(p) for p in pids]
        pos = self._pairs.positions(qids, pids) if qids else np.zeros(0, dtype=np.int64)
        if (pos < 0).any():
            i = int(np.argmax(pos < 0))
            n = int((pos < 0).sum())
            raise TasbRayError(f"file teacher {self.source}: no score for qid {qids[i]!r} pid {pids[i]!r}"
                               + (f" (and {n - 1} more pairs)" if n > 1 else ""))
        return self._pairs.scores[pos]

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        return self.lookup(batch["qid"].tolist(), batch["pid"].tolist())
