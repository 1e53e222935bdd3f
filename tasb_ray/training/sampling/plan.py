"""The batch plan: the ordered (batch, qid, pos_pid, neg_pid) rows a run trains on, its Parquet form and its hash."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pandas as pd

from tasb_ray.config import is_int
from tasb_ray.errors import ConfigError
from tasb_ray.fileio import write_parquet
from tasb_ray.training.sampling.sampler import BatchSampler

PLAN_COLUMNS = ("batch", "qid", "pos_pid", "neg_pid")
_PLAN_HASH_HEADER = "tasb_ray.plan.v1\tbatch\tqid\tpos_pid\tneg_pid\n"


def build_plan(sampler: BatchSampler, num_batches: int) -> pd.DataFrame:
    """The next ``num_batches`` batches of ``sampler`` as rows ``batch, qid, pos_pid, neg_pid`` (``batch``
    counts from 0 at the sampler's current position). The sampler itself is not advanced."""
    if not is_int(num_batches) or num_batches < 0:
        raise ConfigError(f"num_batches must be an integer >= 0, got {num_batches!r}")
    probe = sampler.fork()
    chunks: list[np.ndarray] = []
    sizes: list[int] = []
    for _ in range(num_batches):
        idx, _topped = probe._next_indices()
        chunks.append(idx)
        sizes.append(len(idx))
    idx = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    qid, pos_pid, neg_pid = sampler.external_ids(idx)
    return pd.DataFrame({"batch": np.repeat(np.arange(num_batches, dtype=np.int64), sizes),
                         "qid": qid, "pos_pid": pos_pid, "neg_pid": neg_pid})


def _check_plan(df: pd.DataFrame) -> None:
    if list(df.columns) != list(PLAN_COLUMNS):
        raise ConfigError(f"plan must have columns {list(PLAN_COLUMNS)} in that order, got {list(df.columns)}")


def write_plan(df: pd.DataFrame, path: str | os.PathLike) -> None:
    _check_plan(df)
    write_parquet(path, df.reset_index(drop=True))


def read_plan(path: str | os.PathLike) -> pd.DataFrame:
    df = pd.read_parquet(path)
    _check_plan(df)
    out = pd.DataFrame({"batch": df["batch"].to_numpy(dtype=np.int64)})
    for col in PLAN_COLUMNS[1:]:
        out[col] = df[col].astype(str).to_numpy(dtype=object)
    return out


def plan_hash(df: pd.DataFrame) -> str:
    """sha256 hex of the plan's ordered rows as ``batch<TAB>qid<TAB>pos_pid<TAB>neg_pid<LF>`` lines (UTF-8)
    after a version header. Parquet bytes are not used: they vary with the writer and its settings."""
    _check_plan(df)
    ids = [df[c].astype(str) for c in PLAN_COLUMNS[1:]]
    for col, s in zip(PLAN_COLUMNS[1:], ids):
        if s.str.contains("[\t\n]", regex=True).any():
            raise ValueError(f"plan column {col!r} has an id containing a tab or newline; cannot hash unambiguously")
    lines = df["batch"].astype(np.int64).astype(str) + "\t" + ids[0] + "\t" + ids[1] + "\t" + ids[2] + "\n"
    h = hashlib.sha256(_PLAN_HASH_HEADER.encode())
    h.update("".join(lines.tolist()).encode("utf-8"))
    return h.hexdigest()
