"""Sharded, resumable encoding of a corpus (or a query split) on Ray Data.

The drivers: :func:`encode_corpus` and :func:`encode_queries` plan shards, reuse finished ones, run the Ray Data
pipeline (:mod:`tasb_ray.distributed.ray_data`) over the rest, verify ids, build an optional index and write the
manifest last (:mod:`tasb_ray.distributed.shards`).

Layout of an output directory (local path or a pyarrow-filesystem URI)::

    shard-00000.parquet   doc_id: string, embedding: fixed_size_list<float32>[dim]; rows [0, S)
    shard-00001.parquet   rows [S, 2S) ...
    index/                optional faiss index (DenseIndex.save), loadable by ``tasb-ray evaluate --index``
    manifest.json         written LAST: model, encoder spec, dim, rows, dataset identity, shards (rows, sha256)

* A shard is a fixed row range of the input (``shard_rows`` rows), so its content is a function of the input
  and the shard index alone. Rows carry a stable id: the prepared corpus's ``row`` column.
* Shards are written by the driver, atomically (a temporary name, then a rename / ``fs.move``), each with a
  footer record (run key, shard index, first row, rows). A rerun after a crash keeps every shard whose footer
  matches and encodes only the missing ones; kept files are not rewritten.
* Encoding: ``read_parquet`` (``local://``: read on the driver's node, so workers need not share its disk) →
  filter to the missing shards' rows → ``map_batches(EncoderActor, ActorPoolStrategy)`` (model loaded once per
  actor; one GPU per actor where the cluster has GPUs, else CPU actors with their share of threads) →
  ``iter_batches`` in row order; the driver writes each shard as soon as its rows are in, so it holds at most
  about one shard.
* Embeddings are bit-for-bit reproducible on the same hardware and thread count, whatever rows Ray batches
  together: each text is padded to its own token length rounded up to a multiple of 8 (not to the longest text
  of its batch), and a forward pass with every row at the same padded length gives each row the same result for
  any batch size (checked on CPU). Batches are still formed by length, so padding waste stays small.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasb_ray.distributed.batch_encoder import EMBEDDING, PAD_MULTIPLE, model_fingerprint, resolve_encoder
from tasb_ray.distributed.ray_data import (
    EncodeInput,
    EncodeOptions,
    InjectedFailure,
    corpus_input,
    cpu_pool,
    data_context,
    encode_missing,
    queries_input,
)
from tasb_ray.distributed.shards import (
    FORMAT,
    INDEX_DIR,
    MANIFEST,
    OutputDir,
    ShardPlan,
    checked_shard_file,
    iter_shards,
    iter_written_shards,
    load_embeddings,
    read_footer,
    read_manifest,
    read_manifest_of,
    shard_name,
)
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.retrieval.ann import IndexParams, build_index_streaming, faiss_threads, resolve_index
from tasb_ray.retrieval.dense import INDEX_KINDS, DenseIndex

log = logging.getLogger(__name__)

_Out = OutputDir  # the name the tests and benchmarks knew

# Re-exported: the encoding API in one place.
__all__ = ["EncodeOptions", "InjectedFailure", "MANIFEST", "INDEX_KINDS", "cpu_pool", "data_context", "encode_corpus",
           "encode_queries", "index_of", "iter_shards", "load_embeddings", "read_manifest", "shard_name"]


def _validate(o: EncodeOptions) -> None:
    for name in ("batch_size", "block_rows", "shard_rows", "cpus_per_actor"):
        v = getattr(o, name)
        if v is None and name == "cpus_per_actor":
            continue
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
    if o.num_actors is not None and (not isinstance(o.num_actors, (int, np.integer)) or o.num_actors < 1):
        raise ConfigError(f"num_actors must be an integer >= 1, got {o.num_actors!r}")
    if o.index is not None and o.index not in INDEX_KINDS:
        raise ConfigError(f"index must be one of {', '.join(INDEX_KINDS)}, got {o.index!r}")
    if o.use_gpu not in ("auto", True, False):
        raise ConfigError(f"use_gpu must be 'auto', True or False, got {o.use_gpu!r}")


def _run(inp: EncodeInput, model: str, out_dir: str | os.PathLike, o: EncodeOptions) -> Path | str:
    _validate(o)
    t_start = time.perf_counter()
    out = OutputDir(out_dir)
    name, spec = resolve_encoder(model, o.pooling, o.normalize, o.query_max_len, o.passage_max_len)
    max_len = spec["query_max_len"] if inp.kind == "query" else spec["passage_max_len"]
    plan = ShardPlan(inp.rows, int(o.shard_rows))
    ident = {"format": FORMAT, "kind": inp.kind, "model": name, "model_fingerprint": model_fingerprint(name),
             "encoder": spec, "max_len": max_len, "pad_multiple": PAD_MULTIPLE, "data": inp.identity,
             "rows": inp.rows, "shard_rows": plan.shard_rows}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    if o.overwrite:
        _clear(out)
    manifest = read_manifest_of(out)
    if manifest is not None and manifest.get("key") != key:
        raise TasbRayError(_mismatch_message(out, manifest, ident))
    for n in out.names():  # leftovers of an interrupted write: never under a final name
        if n.startswith(".shard-") or n.startswith(f".{MANIFEST}.tmp-"):
            out.delete(n)

    shards: dict[int, dict] = {}
    for n in out.names():
        if n.startswith("shard-") and n.endswith(".parquet"):
            try:
                s = int(n[len("shard-"):-len(".parquet")])
            except ValueError:
                continue
            footer = read_footer(out, n)
            if footer is None:
                continue
            num_rows, rec = footer
            if rec.get("key") != key:
                raise TasbRayError(f"{out.display}: {n} was written by a different encoding (model, encoder "
                                   f"settings, input data or shard size differ); use another --out or --overwrite")
            start, end = plan.bounds(s)
            if s >= plan.n_shards or not (rec.get("shard") == s and rec.get("rows") == num_rows == end - start):
                log.warning("%s: %s does not match shard %d's row range; it will be encoded again", out.display, n, s)
                continue
            shards[s] = {"file": n, "rows": num_rows, "first_row": plan.bounds(s)[0], "bytes": out.size(n)}
    missing = [s for s in range(plan.n_shards) if s not in shards]
    kept = sorted(shards)
    log.info("%s: %d rows in %d shards of %d; %d complete, %d to encode", out.display, plan.rows, plan.n_shards,
             plan.shard_rows, len(kept), len(missing))

    dim = None
    timing: dict[str, float] = {}
    rows_by_node: dict[str, int] = {}
    if missing and manifest is not None:
        out.delete(MANIFEST)  # shards went missing since it was written: the directory is incomplete again
    if missing:
        dim, rows_by_node = encode_missing(inp, name, spec, out, plan, missing, key, o, shards, timing)
    encoded = len(missing)

    # Everything is on disk: check it, hash the kept shards, index, and only then the manifest.
    if sorted(shards) != list(range(plan.n_shards)):
        raise TasbRayError(f"{out.display}: shards {sorted(set(range(plan.n_shards)) - set(shards))} are missing")
    total = sum(shards[s]["rows"] for s in shards)
    if total != inp.rows:
        raise TasbRayError(f"{out.display}: {total} rows encoded, the input has {inp.rows}")
    dim = _verify_ids(out, plan, inp) or dim
    # sha256 of kept shards: from a matching manifest when the file is unchanged in size, else by reading them.
    recorded = {sh["file"]: sh for sh in (manifest or {}).get("shards", [])}
    for s in kept:
        prior = recorded.get(shards[s]["file"], {})
        same = prior.get("bytes") == shards[s]["bytes"] and prior.get("sha256")
        shards[s]["sha256"] = prior["sha256"] if same else out.sha256(shards[s]["file"])

    index_info = None
    previous_index = (manifest or {}).get("index") if out.exists(INDEX_DIR) else None
    if o.index and previous_index and previous_index.get("kind") == o.index and not missing:
        index_info = previous_index  # same embeddings, same kind: keep it
    elif o.index:
        t = time.perf_counter()
        index_info = _build_index(out, o.index, {"model": name, "spec": spec, "dataset": inp.identity.get("name"),
                                                 "embeddings": {"key": key, "rows": inp.rows}}, plan.n_shards,
                                  inp.rows, dim)
        timing["index_s"] = time.perf_counter() - t
    elif previous_index and not missing:
        index_info = previous_index
    elif out.exists(INDEX_DIR):
        log.info("%s: removing the index of the previous embeddings (pass index=... to rebuild it)", out.display)
        out.delete(INDEX_DIR)

    timing["total_s"] = time.perf_counter() - t_start
    o.stats.update(encoded_shards=encoded, reused_shards=len(kept), rows_by_node=dict(rows_by_node), **timing)
    new_manifest = {
        "format": FORMAT, "key": key, "kind": inp.kind, "model": name, "model_fingerprint": ident["model_fingerprint"],
        "encoder": spec, "max_len": max_len, "pad_multiple": PAD_MULTIPLE, "dim": int(dim), "rows": inp.rows,
        "id_column": inp.id_column, "dataset": inp.identity, "shard_rows": plan.shard_rows,
        "shards": [shards[s] for s in range(plan.n_shards)], "index": index_info,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "last_run": {"encoded_shards": encoded, "reused_shards": len(kept), "rows_by_node": rows_by_node,
                     **{k: round(v, 3) for k, v in timing.items()}},
    }
    out.write_atomic(MANIFEST, (json.dumps(new_manifest, indent=2, sort_keys=True) + "\n").encode())
    log.info("%s: done (%d shards encoded, %d reused, dim %d)", out.display, encoded, len(kept), dim)
    return out.local if out.local is not None else out.display


def _mismatch_message(out: OutputDir, manifest: dict, ident: dict) -> str:
    diffs = []
    for k, label in (("model", "model"), ("kind", "kind"), ("shard_rows", "shard_rows")):
        if manifest.get(k) != ident.get(k):
            diffs.append(f"{label} {manifest.get(k)!r} there, {ident.get(k)!r} now")
    if manifest.get("model") == ident["model"] and manifest.get("model_fingerprint") != ident["model_fingerprint"]:
        diffs.append("model weights changed")
    old_spec, new_spec = manifest.get("encoder") or {}, ident["encoder"]
    changed = [f"{k} {old_spec.get(k)!r} there, {new_spec.get(k)!r} now" for k in sorted(new_spec)
               if old_spec.get(k) != new_spec.get(k)]
    if changed:
        diffs.append("encoder settings: " + ", ".join(changed))
    if manifest.get("dataset") != ident["data"]:
        old, new = manifest.get("dataset") or {}, ident["data"]
        diffs.append(f"data {old.get('name')}/{old.get('sha256', '')[:12]} there, "
                     f"{new.get('name')}/{new.get('sha256', '')[:12]} now")
    detail = "; ".join(diffs) or "format differs"
    return (f"{out.display} already holds embeddings from a different encoding ({detail}); "
            "use another --out, or --overwrite to replace them")


def _clear(out: OutputDir) -> None:
    out.delete(MANIFEST)  # first: what is left no longer looks complete
    for n in out.names():
        if (n.startswith("shard-") and n.endswith(".parquet")) or n.startswith(".shard-") or n == INDEX_DIR:
            out.delete(n)


def _verify_ids(out: OutputDir, plan: ShardPlan, inp: EncodeInput) -> int:
    """Every shard's ids equal the input's ids of its row range, and the input's ids are unique; the dim.

    Works on Arrow arrays, one shard at a time: for 8.8M MS MARCO ids that is ~100 MB, not GBs of Python strings.
    """
    expected = inp.id_array()
    if len(expected) != plan.rows:
        raise TasbRayError(f"{out.display}: the input has {len(expected)} rows now, {plan.rows} when planned")
    if pc.count_distinct(expected).as_py() != len(expected):
        ids = pd.Index(expected.to_pylist())
        raise TasbRayError(f"{out.display}: {inp.id_column} {ids[ids.duplicated()][0]!r} appears more than once in "
                           "the input; ids must be unique")
    dim = 0
    for s in range(plan.n_shards):
        start, end = plan.bounds(s)
        with out.fs.open_input_file(out.join(shard_name(s))) as f:
            pf = pq.ParquetFile(f)
            dim = int(pf.schema_arrow.field(EMBEDDING).type.list_size)
            got = pf.read(columns=[inp.id_column]).column(0).combine_chunks().cast(pa.string())
        if not got.equals(expected.slice(start, end - start)):
            raise TasbRayError(f"{out.display}: {shard_name(s)} holds other ids than rows {start}..{end - 1} of the "
                               "input (rows out of order or lost)")
    return dim


def shard_index(out: OutputDir, n_shards: int, rows: int, dim: int, kind: str | IndexParams, meta: dict,
                memory_budget_bytes: float | None = None) -> DenseIndex:
    """A :class:`DenseIndex` over the first ``n_shards`` shards of ``out``, read shard by shard.

    ``kind`` is an index kind (:data:`INDEX_KINDS`, or ``auto`` with ``memory_budget_bytes``) or resolved
    :class:`IndexParams`. Ids are kept as a NumPy string array, vectors only one shard at a time (plus the seeded
    training sample for IVF-PQ), so what is held is the index itself.
    """
    ids = _shard_ids(out, n_shards)
    if kind == "ivf":  # the legacy IVF-Flat trains on every vector
        return DenseIndex(ids, np.concatenate([v for _, v in iter_written_shards(out, n_shards)]), kind="ivf",
                          meta=meta)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        with faiss_threads(1):  # deterministic graph, as in DenseIndex
            for _, vectors in iter_written_shards(out, n_shards):
                index.add(np.ascontiguousarray(vectors))
        return DenseIndex(ids, index=index, meta={**meta, "kind": kind})
    params = kind if isinstance(kind, IndexParams) else resolve_index(kind, rows, dim, memory_budget_bytes)
    index = build_index_streaming(params, dim, rows, lambda: (v for _, v in iter_written_shards(out, n_shards)))
    return DenseIndex(ids, index=index, meta={**meta, "kind": params.kind, "params": params.as_dict()})


def _shard_ids(out: OutputDir, n_shards: int) -> np.ndarray:
    """The ids of the shards, in row order, as one NumPy string array (the id column alone is read)."""
    parts = [np.array([], dtype=str)]
    for s in range(n_shards):
        with out.fs.open_input_file(out.join(shard_name(s))) as f:
            pf = pq.ParquetFile(f)
            ids = pf.read(columns=[pf.schema_arrow.names[0]]).column(0)
        parts.append(ids.to_numpy(zero_copy_only=False).astype(str))
    return np.concatenate(parts)


def _build_index(out: OutputDir, kind: str, meta: dict, n_shards: int, rows: int, dim: int) -> dict:
    """A faiss index over the shards, saved as ``out/index`` (DenseIndex layout)."""
    dense = shard_index(out, n_shards, rows, dim, kind, meta)
    if out.local is not None:
        dense.save(out.local / INDEX_DIR)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            dense.save(Path(tmp) / INDEX_DIR)
            out.delete(INDEX_DIR)
            pafs.copy_files(str(Path(tmp) / INDEX_DIR), out.join(INDEX_DIR), destination_filesystem=out.fs)
    return {"kind": dense.meta["kind"], "path": INDEX_DIR, "rows": int(len(dense.doc_ids))}


def index_of(out_dir: str | os.PathLike, kind: str | IndexParams, memory_budget_bytes: float | None = None,
             meta: dict | None = None) -> DenseIndex:
    """A :class:`DenseIndex` (built now, not saved) over a complete output directory's embeddings."""
    out = OutputDir(out_dir, create=False)
    manifest = read_manifest_of(out)
    if manifest is None:
        raise TasbRayError(f"{out.display}: no {MANIFEST}: not an embeddings directory, or its encoding did not "
                           "finish")
    for sh in manifest["shards"]:
        checked_shard_file(out, sh.get("file"))
    return shard_index(out, len(manifest["shards"]), int(manifest["rows"]), int(manifest["dim"]), kind,
                       {"model": manifest["model"], "spec": manifest["encoder"], **(meta or {})},
                       memory_budget_bytes)


# --- public entry points -----------------------------------------------------------------------------------


def encode_corpus(ds, model: str, out: str | os.PathLike, *, pooling: str = "auto", normalize: bool | None = None,
                  passage_max_len: int | None = None, batch_size: int = 64, block_rows: int = 1024,
                  shard_rows: int = 10_000, num_actors: int | None = None, cpus_per_actor: int | None = None,
                  use_gpu: bool | str = "auto", index: str | None = None, shared_fs: bool = False,
                  overwrite: bool = False, fail_after_shards: int | None = None, show_progress: bool = True,
                  address: str | None = None, ray_temp_dir: str | os.PathLike | None = None,
                  ray_num_cpus: int | None = None, placement_group: bool = False,
                  stats: dict | None = None) -> Path | str:
    """Encode every passage of a prepared corpus into Parquet shards under ``out``; resumable.

    Args:
        ds: a :class:`tasb_ray.data.PreparedDataset` (format 2: its corpus has a ``row`` column).
        model: Hugging Face id, local path or short name.
        out: output directory (local path, or a URI pyarrow.fs understands).
        pooling, normalize, passage_max_len: encoder settings (default: the model's own).
        batch_size: rows per forward pass; block_rows: rows per Ray Data batch handed to an actor (at most; smaller
            for small jobs so each actor gets at least ~4 batches).
        shard_rows: rows per shard file (fixed row ranges: shard ``i`` holds rows ``[i*S, (i+1)*S)``).
        num_actors: actor pool size (default: one per GPU, else one per ``cpus_per_actor`` CPUs of the cluster).
        cpus_per_actor: torch threads per CPU actor (default: the actor's share of the cluster's CPUs); see
            :func:`cpu_pool` for the CPUs it reserves.
        use_gpu: ``auto`` (GPUs when the cluster has them), True or False.
        index: also build a faiss index (``flat``, ``ivf``, ``hnsw``) into ``out/index``.
        shared_fs: read the corpus by its plain path on the workers (all nodes see the same filesystem)
            instead of ``local://`` (read on the driver's node).
        overwrite: replace embeddings of a different model/spec/corpus found in ``out``.
        fail_after_shards: raise :class:`InjectedFailure` after this many shards were written (tests).
        show_progress: a tqdm bar over rows, advanced as shards complete.
        address, ray_temp_dir, ray_num_cpus: see :func:`tasb_ray.distributed.runtime.init_ray`; Ray is started
            only when something is left to encode, and shut down afterwards if started here.
        placement_group: run the actor pool and every Ray Data task in the caller's placement group, one actor
            per encoder bundle (a sweep trial's, laid out by :func:`tasb_ray.distributed.ray_data.trial_bundles`);
            ``num_actors``, ``cpus_per_actor`` and ``use_gpu`` then come from the bundles.
        stats: filled with ``encoded_shards``, ``reused_shards``, ``rows_by_node`` (rows encoded in this call per
            Ray node id, also in the manifest's ``last_run``) and timings (``first_shard_s``, ``encode_s``,
            ``steady_rows_per_s``, ``total_s``).

    Returns:
        The output directory (a Path; the URI string for remote outputs).

    Raises:
        TasbRayError: another encoding is in ``out`` (without ``overwrite``), rows were lost or duplicated, or ids
            are not unique.
    """
    o = EncodeOptions(pooling=pooling, normalize=normalize, passage_max_len=passage_max_len, batch_size=batch_size,
                      block_rows=block_rows, shard_rows=shard_rows, num_actors=num_actors,
                      cpus_per_actor=cpus_per_actor, use_gpu=use_gpu, index=index, shared_fs=shared_fs,
                      overwrite=overwrite, fail_after_shards=fail_after_shards, show_progress=show_progress,
                      address=address, ray_temp_dir=str(ray_temp_dir) if ray_temp_dir else None,
                      ray_num_cpus=ray_num_cpus, placement_group=placement_group,
                      stats=stats if stats is not None else {})
    return _run(corpus_input(ds, shared_fs), model, out, o)


def encode_queries(ds, split: str | None, model: str, out: str | os.PathLike, *, pooling: str = "auto",
                   normalize: bool | None = None, query_max_len: int | None = None, batch_size: int = 64,
                   block_rows: int = 1024, shard_rows: int = 10_000, num_actors: int | None = None,
                   cpus_per_actor: int | None = None, use_gpu: bool | str = "auto", overwrite: bool = False,
                   fail_after_shards: int | None = None, show_progress: bool = True, address: str | None = None,
                   ray_temp_dir: str | os.PathLike | None = None, ray_num_cpus: int | None = None,
                   stats: dict | None = None) -> Path | str:
    """Encode the queries of ``split`` (all queries for ``None``) like :func:`encode_corpus` (kind ``query``;
    shards hold ``query_id, embedding``). The queries travel from the driver (``ray.data.from_pandas``)."""
    o = EncodeOptions(pooling=pooling, normalize=normalize, query_max_len=query_max_len, batch_size=batch_size,
                      block_rows=block_rows, shard_rows=shard_rows, num_actors=num_actors,
                      cpus_per_actor=cpus_per_actor, use_gpu=use_gpu, overwrite=overwrite,
                      fail_after_shards=fail_after_shards, show_progress=show_progress, address=address,
                      ray_temp_dir=str(ray_temp_dir) if ray_temp_dir else None, ray_num_cpus=ray_num_cpus,
                      stats=stats if stats is not None else {})
    return _run(queries_input(ds, split), model, out, o)
