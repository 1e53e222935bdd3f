"""Typed Parquet tables: one writer and one reader for every artefact the pipeline stores (pairs, clusters, ...)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import pandas as pd

from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import write_parquet

# Column kinds: ids are Python strings (object arrays), the rest plain NumPy.
ID, INT, FLOAT = "id", "int", "float"
_DTYPES = {INT: np.int64, FLOAT: np.float64}


def check_columns(df: pd.DataFrame, columns, what: str = "table") -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TasbRayError(f"{what} lacks column(s) {missing} (needs {list(columns)})")


def coerce(df: pd.DataFrame, schema: Mapping[str, str]) -> pd.DataFrame:
    """Only ``schema``'s columns, in its order, with ids as str objects (pandas 3 would read them back as ``str``)."""
    return pd.DataFrame({c: df[c].astype(str).to_numpy(dtype=object) if kind == ID else df[c].to_numpy(dtype=_DTYPES[kind])
                         for c, kind in schema.items()})


def write_table(path: str | os.PathLike, df: pd.DataFrame, schema: Mapping[str, str]) -> None:
    """Write ``schema``'s columns of ``df`` as Parquet, atomically."""
    check_columns(df, schema, f"{path}: table")
    write_parquet(path, df[list(schema)].reset_index(drop=True))


def read_table(path: str | os.PathLike, schema: Mapping[str, str]) -> pd.DataFrame:
    df = pd.read_parquet(path)
    check_columns(df, schema, f"{path}: table")
    return coerce(df, schema)
