"""Actor pools on Ray Data for batch work handed in by the caller: whole packed blocks, or texts to encode.

:func:`run_packed_blocks` runs any actor class over blocks that must reach one actor whole (the pairs stage's
whole-query teacher batches), :func:`encode_texts_ray` encodes texts with :class:`EncoderActor`. Neither knows
what the rows mean: the callers (``tasb_ray.pipeline``) bring the actor and the packing.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
import torch
from transformers import AutoConfig

from tasb_ray.distributed.batch_encoder import EMBEDDING, ROW, EncoderActor, assigned_cpus, resolve_encoder, vectors_of
from tasb_ray.distributed.ray_data import cpu_actor_resources, cpu_pool, data_context, gpu_pool
from tasb_ray.distributed.runtime import cluster_cpus_gpus, node_cpus, ray_session
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import QUERY_ID, TEXT

log = logging.getLogger(__name__)

POS = "_pos"  # a row's position in the caller's table: results are scattered back by it


def set_threads(threads: int | None) -> None:
    n = threads or assigned_cpus()
    if n:
        torch.set_num_threads(max(1, int(n)))



def actor_pool(num_actors: int | None, use_gpu: bool | str,
          cpus_per_actor: int | None = None) -> tuple[int, dict, int | None]:
    """(actors, map_batches resources, torch threads) for the connected cluster; see :func:`tasb_ray.distributed.ray_data.cpu_pool`."""
    cpus, gpus = cluster_cpus_gpus()
    gpu = gpus > 0 if use_gpu == "auto" else bool(use_gpu)
    if gpu:
        n, resources = gpu_pool(cpus, gpus, num_actors)
        return n, resources, None
    n, threads, logical = cpu_pool(cpus, num_actors, cpus_per_actor, node_cpus())
    return n, cpu_actor_resources(logical), threads



BLOCK = "_block"   # a whole block as Arrow IPC bytes (see run_packed_blocks)


def block_bytes(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


class WholeBlocks:
    """Ray Data callable class: unpacks each row's block (``BLOCK``) and hands it whole to ``actor``."""

    def __init__(self, actor: type, actor_kwargs: Mapping[str, Any]):
        self.inner = actor(**actor_kwargs)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        parts = [self.inner(pa.ipc.open_stream(b).read_all().to_pandas()) for b in batch[BLOCK]]
        return pd.concat(parts, ignore_index=True) if len(parts) != 1 else parts[0]


def run_packed_blocks(blocks: Sequence[pd.DataFrame], actor: type, actor_kwargs: Mapping[str, Any], n_rows: int, *,
                      num_actors: int | None = None, use_gpu: bool | str = "auto", cpus_per_actor: int | None = None,
                      address: str | None = None, preserve_order: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Run ``actor`` over ``blocks`` on an actor pool, each block handed to one actor whole.

    Every block carries ``POS`` (row positions in ``[0, n_rows)``); ``actor(frame)`` returns ``POS`` and ``score``.
    Returns ``(scores[n_rows], times_seen[n_rows])`` so the caller can check every row came back exactly once.
    ``actor_kwargs`` gets ``threads`` (torch threads of a CPU actor) added.
    """
    with ray_session(address), data_context(preserve_order=preserve_order):
        n, resources, threads = actor_pool(num_actors, use_gpu, cpus_per_actor)
        n = max(1, min(n, len(blocks)))
        # One row per block, so that a batch of one row is one whole block: Ray Data needs a batch_size for GPU
        # actors, and a row count would cut blocks (and the packed batches in them) at arbitrary rows.
        ds = ray.data.from_pandas([pd.DataFrame({BLOCK: [block_bytes(b)]}) for b in blocks])
        out = ds.map_batches(WholeBlocks, fn_constructor_kwargs={"actor": actor,
                                                                 "actor_kwargs": {**actor_kwargs, "threads": threads}},
                             batch_size=1, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=n),
                             **resources)
        scores = np.full(n_rows, np.nan)
        seen = np.zeros(n_rows, dtype=np.int64)
        for part in out.iter_batches(batch_size=None, batch_format="pandas"):
            pos = part[POS].to_numpy(dtype=np.int64)
            scores[pos] = part["score"].to_numpy(dtype=np.float64)
            np.add.at(seen, pos, 1)
    return scores, seen


def encode_texts_ray(ids: Sequence[str], texts: Sequence[str], model: str, kind: str = "query", *,
                     pooling: str = "auto", normalize: bool | None = None, query_max_len: int | None = None,
                     passage_max_len: int | None = None, batch_size: int = 64, block_rows: int = 1024,
                     num_actors: int | None = None, use_gpu: bool | str = "auto",
                     cpus_per_actor: int | None = None, address: str | None = None) -> np.ndarray:
    """float32 ``[N, dim]`` embeddings of ``texts`` (aligned with ``ids``) from an :class:`EncoderActor` pool.

    The in-memory counterpart of :func:`tasb_ray.distributed.encode.encode_queries` (nothing written): e.g. the
    training queries to cluster for TAS. Same values as ``encode_queries`` (see ``encode_bucketed``).
    """
    if kind not in ("query", "passage"):
        raise ConfigError(f"kind must be 'query' or 'passage', got {kind!r}")
    if len(ids) != len(texts):
        raise ConfigError(f"{len(ids)} ids for {len(texts)} texts")
    name, spec = resolve_encoder(model, pooling, normalize, query_max_len, passage_max_len)
    n = len(texts)
    frame = pd.DataFrame({ROW: np.arange(n, dtype=np.int64), QUERY_ID: [str(i) for i in ids],
                          TEXT: list(texts)})
    if n == 0:
        return np.zeros((0, int(AutoConfig.from_pretrained(name).hidden_size)), dtype=np.float32)
    blocks = [frame.iloc[s:s + block_rows].reset_index(drop=True) for s in range(0, n, block_rows)]
    with ray_session(address), data_context():
        actors, resources, threads = actor_pool(num_actors, use_gpu, cpus_per_actor)
        actors = max(1, min(actors, len(blocks)))
        ds = ray.data.from_pandas(blocks).map_batches(
            EncoderActor,
            fn_constructor_kwargs=dict(model=name, pooling=spec["pooling"], normalize=spec["normalize"],
                                       query_max_len=spec["query_max_len"], passage_max_len=spec["passage_max_len"],
                                       kind=kind, id_column=QUERY_ID, batch_size=batch_size,
                                       device="cuda" if "num_gpus" in resources else "cpu", threads=threads),
            batch_size=block_rows, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            **resources)
        out = None
        seen = 0
        for part in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = part.column(ROW).to_numpy()
            vec = vectors_of(part.column(EMBEDDING))
            if out is None:
                out = np.empty((n, vec.shape[1]), dtype=np.float32)
            out[rows] = vec
            seen += len(rows)
    if seen != n:
        raise TasbRayError(f"encode_texts_ray: {seen} embeddings for {n} texts")
    return out


def encode_queries_ray(queries: pd.DataFrame, model: str, **kwargs) -> np.ndarray:
    """Embeddings (kind ``query``) of a ``query_id, text`` frame, in its row order; see :func:`encode_texts_ray`."""
    return encode_texts_ray(queries[QUERY_ID].tolist(), queries[TEXT].tolist(), model, "query", **kwargs)
