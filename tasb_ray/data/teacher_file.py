"""The TAS-B authors' teacher-score file: ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``."""

from __future__ import annotations

import os

import pandas as pd

from tasb_ray.data.lines import iter_lines, parse_float, split_columns
from tasb_ray.errors import DataFormatError
from tasb_ray.fileio import atomic_path
from tasb_ray.schema import PAIRS_COLUMNS

_FIELDS = ("pos_score", "neg_score", "qid", "pos_pid", "neg_pid")


def read_teacher_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read the authors' TSV into the project's pairs table (``qid, pos_pid, neg_pid, pos_score, neg_score``)."""
    rows = []
    for n, line in iter_lines(path):
        parts = [p.strip() for p in split_columns(path, n, line, 5)]
        for name, value in zip(_FIELDS[2:], parts[2:]):
            if not value:
                raise DataFormatError(path, "empty id", line=n, field=name)
        rows.append((parts[2], parts[3], parts[4],
                     parse_float(path, n, parts[0], "pos_score"), parse_float(path, n, parts[1], "neg_score")))
    if not rows:
        raise DataFormatError(path, "no teacher scores in file")
    return pd.DataFrame(rows, columns=list(PAIRS_COLUMNS))


def write_teacher_tsv(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Export a pairs table back to the authors' TSV layout."""
    missing = [c for c in PAIRS_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    cols = pairs[list(_FIELDS)]
    with atomic_path(path) as tmp:
        cols.to_csv(tmp, sep="\t", header=False, index=False, float_format="%.6f")
