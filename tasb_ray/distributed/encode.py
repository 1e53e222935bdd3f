"""Sharded, resumable encoding of a corpus (or a query split) on Ray Data.

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

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from tasb_ray.distributed.batch_encoder import (
    EMBEDDING,
    PAD_MULTIPLE,
    ROW,
    EncoderActor,
    fixed_size_list,
    model_fingerprint,
    resolve_encoder,
    vectors_of,
)
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
INDEX_DIR = "index"
FOOTER_KEY = b"tasb_ray"
INDEX_KINDS = ("flat", "ivf", "hnsw")


class InjectedFailure(TasbRayError):
    """Raised by ``fail_after_shards``: a simulated crash for tests."""


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


# --- output location ---------------------------------------------------------------------------------------


class _Out:
    """An output directory on a pyarrow filesystem: local path or URI."""

    def __init__(self, out: str | os.PathLike, create: bool = True):
        import pyarrow.fs as pafs

        s = os.fspath(out)
        if "://" in s and not s.startswith("file://"):
            self.fs, self.path = pafs.FileSystem.from_uri(s)
            self.local = None
            self.display = s
        else:
            local = Path(s[len("file://"):] if s.startswith("file://") else s).expanduser().resolve()
            self.fs, self.path = pafs.LocalFileSystem(), str(local)
            self.local = local
            self.display = str(local)
        if create:
            self.fs.create_dir(self.path, recursive=True)

    def join(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{name}"

    def exists(self, name: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.join(name)).type != pafs.FileType.NotFound

    def size(self, name: str) -> int:
        return int(self.fs.get_file_info(self.join(name)).size)

    def names(self) -> list[str]:
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.join(name)) as f:
            return f.read()

    def write_atomic(self, name: str, data) -> None:
        """``data`` (bytes / buffer) under a temporary name, then moved onto ``name``."""
        tmp = self.join(f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, self.join(name))
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except Exception:  # noqa: BLE001 - already gone
                pass
            raise

    def delete(self, name: str) -> None:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.join(name))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self.join(name))
        elif info.type != pafs.FileType.NotFound:
            self.fs.delete_file(self.join(name))

    def sha256(self, name: str, chunk: int = 1 << 22) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(self.join(name)) as f:
            while block := f.read(chunk):
                h.update(block)
        return h.hexdigest()


def _read_manifest(out: _Out) -> dict | None:
    if not out.exists(MANIFEST):
        return None
    return json.loads(out.read_bytes(MANIFEST))


# --- what is encoded ---------------------------------------------------------------------------------------


@dataclass
class _Input:
    """The rows to encode: ``rows`` rows with ids ``0..rows-1``, from a Parquet file or an in-memory frame."""

    kind: str                        # "passage" | "query"
    id_column: str                   # doc_id | query_id
    rows: int
    identity: dict                   # dataset identity recorded in the manifest and the run key
    parquet: Path | None = None      # a prepared corpus (with a ``row`` column)
    frame: pd.DataFrame | None = None  # id, text, row
    shared_fs: bool = False

    def id_array(self):
        """The ids in row order as one Arrow string array (compact: no Python objects)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.frame is not None:
            return pa.array(self.frame[self.id_column].astype(str).tolist(), type=pa.string())
        col = pq.read_table(self.parquet, columns=[self.id_column]).column(0)
        return col.combine_chunks().cast(pa.string())

    def dataset(self, row_ranges: list[tuple[int, int]], block_rows: int):
        """A Ray Dataset of ``row, id, text`` restricted to ``row_ranges`` (``[start, end)``, sorted)."""
        import ray

        if self.frame is not None:
            keep = np.zeros(self.rows, dtype=bool)
            for a, b in row_ranges:
                keep[a:b] = True
            part = self.frame[keep]
            blocks = [part.iloc[s:s + block_rows].reset_index(drop=True) for s in range(0, len(part), block_rows)]
            return ray.data.from_pandas(blocks)
        from ray.data.expressions import col, lit

        path = str(self.parquet)
        with warnings.catch_warnings():
            # ``local://`` is deprecated in Ray 2.60 (removal announced after January 2027) but is what reads on
            # the driver's node without assuming that workers share its disk; --shared-fs avoids it.
            warnings.filterwarnings("ignore", message=".*local://.*")
            ds = ray.data.read_parquet(path if self.shared_fs else f"local://{path}")
        if row_ranges != [(0, self.rows)]:
            expr = None
            for a, b in row_ranges:
                term = (col(ROW) >= lit(int(a))) & (col(ROW) < lit(int(b)))
                expr = term if expr is None else expr | term
            ds = ds.filter(expr=expr)
        # Streaming re-blocking (no shuffle): a small corpus is one Parquet block, and an actor pool only spreads
        # work over actors block by block.
        return ds.select_columns([ROW, self.id_column, TEXT]).repartition(target_num_rows_per_block=block_rows)


def _corpus_input(ds, shared_fs: bool) -> _Input:
    import pyarrow.parquet as pq

    path = Path(ds.corpus_path).resolve()
    schema = pq.read_schema(path)
    if ROW not in schema.names:
        raise TasbRayError(f"{path}: prepared corpus has no '{ROW}' column (an older cache format); "
                           "re-run 'tasb-ray prepare-data' to rebuild it")
    rows = pq.read_metadata(path).num_rows
    identity = {"name": ds.name, "table": "corpus.parquet", "sha256": ds.table_sha256("corpus.parquet"),
                "rows": int(rows)}
    return _Input("passage", DOC_ID, int(rows), identity, parquet=path, shared_fs=shared_fs)


def _queries_input(ds, split: str | None) -> _Input:
    q = ds.queries(split)[[QUERY_ID, TEXT]].reset_index(drop=True)
    q[QUERY_ID] = q[QUERY_ID].astype(str)
    q[ROW] = np.arange(len(q), dtype=np.int64)
    h = hashlib.sha256()
    for qid, text in zip(q[QUERY_ID], q[TEXT]):
        h.update(f"{qid}\t{text}\n".encode())
    identity = {"name": ds.name, "table": "queries.parquet", "split": split, "sha256": h.hexdigest(),
                "rows": len(q)}
    return _Input("query", QUERY_ID, len(q), identity, frame=q)


# --- shards ------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    rows: int
    shard_rows: int

    @property
    def n_shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.shard_rows, min((i + 1) * self.shard_rows, self.rows)


def _footer(out: _Out, name: str) -> tuple[int, dict] | None:
    """(num_rows, tasb_ray footer record) of a shard file; None when unreadable."""
    import pyarrow.parquet as pq

    try:
        with out.fs.open_input_file(out.join(name)) as f:
            md = pq.read_metadata(f)
        meta = md.schema.to_arrow_schema().metadata or {}
        return md.num_rows, json.loads(meta.get(FOOTER_KEY, b"{}"))
    except Exception as e:  # noqa: BLE001 - a damaged file counts as missing
        log.warning("%s: unreadable shard (%s); it will be encoded again", out.join(name), e)
        return None


def _shard_bytes(ids: np.ndarray, vectors: np.ndarray, id_column: str, record: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({id_column: pa.array(ids, type=pa.string()), EMBEDDING: fixed_size_list(vectors)})
    table = table.replace_schema_metadata({FOOTER_KEY: json.dumps(record, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression={id_column: "zstd", EMBEDDING: "none"},
                   use_dictionary=[id_column], write_statistics=[id_column])
    return sink.getvalue()


class _ShardWriter:
    """Collects encoded rows from the stream and writes each shard once all its rows are in."""

    def __init__(self, out: _Out, plan: _Plan, todo: Iterable[int], id_column: str, key: str,
                 on_written: Callable[[int, dict], None]):
        self.out, self.plan, self.id_column, self.key = out, plan, id_column, key
        self.todo = set(todo)
        self.parts: dict[int, list] = {}
        self.count: dict[int, int] = {}
        self.on_written = on_written
        self.dim: int | None = None

    def add(self, batch) -> None:
        rows = batch.column(ROW).to_numpy()
        if len(rows) == 0:
            return
        shard = rows // self.plan.shard_rows
        # Rows arrive in order (preserve_order), so a batch is one or a few runs of equal shard ids.
        cuts = np.flatnonzero(np.diff(shard)) + 1
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            s = int(shard[a])
            if s not in self.todo:
                raise TasbRayError(f"encoded rows of shard {s}, which was not requested (or arrived twice)")
            self.parts.setdefault(s, []).append(batch.slice(int(a), int(b - a)))
            self.count[s] = self.count.get(s, 0) + int(b - a)
            start, end = self.plan.bounds(s)
            if self.count[s] > end - start:
                raise TasbRayError(f"shard {s}: {self.count[s]} rows encoded for {end - start} (duplicated rows)")
            if self.count[s] == end - start:
                self._write(s)

    def _write(self, s: int) -> None:
        import pyarrow as pa

        table = pa.concat_tables(self.parts.pop(s))
        rows = table.column(ROW).to_numpy()
        order = np.argsort(rows, kind="stable")
        start, end = self.plan.bounds(s)
        if not np.array_equal(rows[order], np.arange(start, end)):
            raise TasbRayError(f"shard {s}: rows are not exactly {start}..{end - 1}")
        ids = table.column(self.id_column).to_numpy(zero_copy_only=False)[order]
        vectors = vectors_of(table.column(EMBEDDING))[order]
        self.dim = vectors.shape[1]
        record = {"key": self.key, "shard": s, "first_row": start, "rows": end - start}
        data = _shard_bytes(ids, vectors, self.id_column, record)
        self.out.write_atomic(shard_name(s), data)
        self.todo.discard(s)
        del self.count[s]
        self.on_written(s, {"file": shard_name(s), "rows": end - start, "first_row": start,
                            "bytes": data.size, "sha256": hashlib.sha256(data).hexdigest()})


def _row_ranges(plan: _Plan, shards: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` row ranges covering ``shards`` (sorted)."""
    ranges: list[list[int]] = []
    for s in sorted(shards):
        a, b = plan.bounds(s)
        if ranges and ranges[-1][1] == a:
            ranges[-1][1] = b
        else:
            ranges.append([a, b])
    return [(a, b) for a, b in ranges]


# --- the driver --------------------------------------------------------------------------------------------


@dataclass
class EncodeOptions:
    pooling: str = "auto"
    normalize: bool | None = None
    query_max_len: int | None = None
    passage_max_len: int | None = None
    batch_size: int = 64
    block_rows: int = 1024
    shard_rows: int = 10_000
    num_actors: int | None = None
    cpus_per_actor: int | None = None
    use_gpu: bool | str = "auto"
    index: str | None = None
    shared_fs: bool = False
    overwrite: bool = False
    fail_after_shards: int | None = None
    show_progress: bool = True
    address: str | None = None
    ray_temp_dir: str | None = None
    ray_num_cpus: int | None = None
    stats: dict = field(default_factory=dict)


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


def _run(inp: _Input, model: str, out_dir: str | os.PathLike, o: EncodeOptions) -> Path | str:
    _validate(o)
    t_start = time.perf_counter()
    out = _Out(out_dir)
    name, spec = resolve_encoder(model, o.pooling, o.normalize, o.query_max_len, o.passage_max_len)
    max_len = spec["query_max_len"] if inp.kind == "query" else spec["passage_max_len"]
    plan = _Plan(inp.rows, int(o.shard_rows))
    ident = {"format": FORMAT, "kind": inp.kind, "model": name, "model_fingerprint": model_fingerprint(name),
             "encoder": spec, "max_len": max_len, "pad_multiple": PAD_MULTIPLE, "data": inp.identity,
             "rows": inp.rows, "shard_rows": plan.shard_rows}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    if o.overwrite:
        _clear(out)
    manifest = _read_manifest(out)
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
            footer = _footer(out, n)
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
    if missing and manifest is not None:
        out.delete(MANIFEST)  # shards went missing since it was written: the directory is incomplete again
    if missing:
        dim = _encode_missing(inp, name, spec, out, plan, missing, key, o, shards, timing)
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
                                                 "embeddings": {"key": key, "rows": inp.rows}}, plan.n_shards)
        timing["index_s"] = time.perf_counter() - t
    elif previous_index and not missing:
        index_info = previous_index
    elif out.exists(INDEX_DIR):
        log.info("%s: removing the index of the previous embeddings (pass index=... to rebuild it)", out.display)
        out.delete(INDEX_DIR)

    timing["total_s"] = time.perf_counter() - t_start
    o.stats.update(encoded_shards=encoded, reused_shards=len(kept), **timing)
    new_manifest = {
        "format": FORMAT, "key": key, "kind": inp.kind, "model": name, "model_fingerprint": ident["model_fingerprint"],
        "encoder": spec, "max_len": max_len, "pad_multiple": PAD_MULTIPLE, "dim": int(dim), "rows": inp.rows,
        "id_column": inp.id_column, "dataset": inp.identity, "shard_rows": plan.shard_rows,
        "shards": [shards[s] for s in range(plan.n_shards)], "index": index_info,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "last_run": {"encoded_shards": encoded, "reused_shards": len(kept),
                     **{k: round(v, 3) for k, v in timing.items()}},
    }
    out.write_atomic(MANIFEST, (json.dumps(new_manifest, indent=2, sort_keys=True) + "\n").encode())
    log.info("%s: done (%d shards encoded, %d reused, dim %d)", out.display, encoded, len(kept), dim)
    return out.local if out.local is not None else out.display


def _mismatch_message(out: _Out, manifest: dict, ident: dict) -> str:
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


def _clear(out: _Out) -> None:
    out.delete(MANIFEST)  # first: what is left no longer looks complete
    for n in out.names():
        if (n.startswith("shard-") and n.endswith(".parquet")) or n.startswith(".shard-") or n == INDEX_DIR:
            out.delete(n)


def _encode_missing(inp: _Input, name: str, spec: dict, out: _Out, plan: _Plan, missing: list[int], key: str,
                    o: EncodeOptions, shards: dict, timing: dict) -> int:

    from tasb_ray.distributed.runtime import cluster_cpus_gpus, ray_session

    with ray_session(o.address, num_cpus=o.ray_num_cpus, temp_dir=o.ray_temp_dir):
        cpus, gpus = cluster_cpus_gpus()
        use_gpu = gpus > 0 if o.use_gpu == "auto" else bool(o.use_gpu)
        if use_gpu and gpus < 1:
            raise TasbRayError("use_gpu=True but the Ray cluster has no GPU")
        if use_gpu:
            num_actors = o.num_actors or max(1, int(gpus))
            resources, threads = {"num_gpus": 1}, None
        else:
            num_actors, threads, logical = cpu_pool(cpus, o.num_actors, o.cpus_per_actor)
            resources = {"num_cpus": logical}
        todo_rows = sum(plan.bounds(s)[1] - plan.bounds(s)[0] for s in missing)
        # At least ~4 blocks per actor, so a small job does not end with one busy actor and the rest idle.
        block_rows = max(1, min(o.block_rows, -(-todo_rows // (4 * num_actors))))
        log.info("encoding %d shards (%d rows) with %d %s actor(s), %d rows per block", len(missing), todo_rows,
                 num_actors, "GPU" if use_gpu else "CPU", block_rows)
        with data_context(preserve_order=True):
            return _stream(inp, name, spec, out, plan, missing, key, o, shards, timing, use_gpu, num_actors,
                           threads, resources, block_rows)


@contextlib.contextmanager
def data_context(preserve_order: bool = False):
    """Ray Data settings for the datasets built and run in the block, restored afterwards."""
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order)
    ctx.enable_progress_bars = False  # our own tqdm bar counts rows as shards are written
    ctx.execution_options.preserve_order = preserve_order
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved


def _stream(inp: _Input, name: str, spec: dict, out: _Out, plan: _Plan, missing: list[int], key: str,
            o: EncodeOptions, shards: dict, timing: dict, use_gpu: bool, num_actors: int, threads: int | None,
            resources: dict, block_rows: int) -> int:
    """Run the Ray Data pipeline over the missing shards' rows and write each shard as it completes."""
    import ray

    source = inp.dataset(_row_ranges(plan, missing), block_rows)
    encoded = source.map_batches(
        EncoderActor,
        fn_constructor_kwargs=dict(model=name, pooling=spec["pooling"], normalize=spec["normalize"],
                                   query_max_len=spec["query_max_len"], passage_max_len=spec["passage_max_len"],
                                   kind=inp.kind, id_column=inp.id_column, batch_size=o.batch_size,
                                   device="cuda" if use_gpu else "cpu", threads=threads),
        batch_size=block_rows, batch_format="pyarrow", zero_copy_batch=True,
        compute=ray.data.ActorPoolStrategy(size=num_actors), **resources)
    encoded.context.execution_options.preserve_order = True
    encoded.context.enable_progress_bars = False

    progress = None
    if o.show_progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=plan.rows, initial=sum(shards[s]["rows"] for s in shards), unit="row",
                        desc=f"encode {inp.kind}s", smoothing=0.1)
    written = [0]
    t0 = time.perf_counter()

    def on_written(s: int, info: dict) -> None:
        shards[s] = info
        written[0] += 1
        now = time.perf_counter()
        if written[0] == 1:
            timing["first_shard_s"] = now - t0
            timing["_first_shard_at"] = now
            timing["_first_shard_rows"] = info["rows"]
        timing["_last_shard_at"] = now
        if progress is not None:
            progress.update(info["rows"])
        if o.fail_after_shards is not None and written[0] >= o.fail_after_shards:
            raise InjectedFailure(f"injected failure after {written[0]} shard(s) (fail_after_shards)")

    writer = _ShardWriter(out, plan, missing, inp.id_column, key, on_written)
    batches = encoded.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
    try:
        for batch in batches:
            writer.add(batch)
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        if progress is not None:
            progress.close()
    if writer.todo:
        raise TasbRayError(f"Ray Data returned no rows for shards {sorted(writer.todo)}")
    timing["encode_s"] = time.perf_counter() - t0
    first, last = timing.pop("_first_shard_at"), timing.pop("_last_shard_at")
    first_rows = timing.pop("_first_shard_rows")
    steady_rows = sum(shards[s]["rows"] for s in missing) - first_rows
    if last > first and steady_rows > 0:
        timing["steady_rows_per_s"] = steady_rows / (last - first)
    return writer.dim


def cpu_pool(cpus: float, num_actors: int | None = None, cpus_per_actor: int | None = None) -> tuple[int, int, float]:
    """(actors, torch threads per actor, logical CPUs each actor reserves) for CPU encoding on ``cpus`` CPUs.

    Threads: ``cpus_per_actor``, else the actor's share of the CPUs, so the pool never runs more threads than
    cores. Logical reservation: the threads, but shrunk so that one CPU stays free: Ray Data's file listing and
    read tasks each ask for a whole CPU, and an actor pool holding every CPU starves them (measured: a 2-actor
    pool on 2 CPUs never got its first block).
    """
    if num_actors is None:
        num_actors = max(1, int(cpus // (cpus_per_actor or 1)))
    threads = int(cpus_per_actor) if cpus_per_actor else max(1, int(cpus // num_actors))
    spare = max(0.0, cpus - 1.0)
    logical = round(min(float(threads), spare / num_actors), 4)
    return int(num_actors), threads, logical


def _verify_ids(out: _Out, plan: _Plan, inp: _Input) -> int:
    """Every shard's ids equal the input's ids of its row range, and the input's ids are unique; the dim.

    Works on Arrow arrays, one shard at a time: for 8.8M MS MARCO ids that is ~100 MB, not GBs of Python strings.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

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


def iter_shards(out: str | os.PathLike, verify: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` per shard, in row order, of a complete output directory."""
    import pyarrow.parquet as pq

    o = _Out(out, create=False)
    manifest = _read_manifest(o)
    if manifest is None:
        raise TasbRayError(f"{o.display}: no {MANIFEST}: not an embeddings directory, or its encoding did not finish "
                           "(run the same command again to resume)")
    id_column = manifest.get("id_column", DOC_ID)
    for sh in manifest["shards"]:
        if verify and o.sha256(sh["file"]) != sh["sha256"]:
            raise TasbRayError(f"{o.display}/{sh['file']}: sha256 differs from the manifest (file changed)")
        with o.fs.open_input_file(o.join(sh["file"])) as f:
            table = pq.read_table(f)
        if table.num_rows != sh["rows"]:
            raise TasbRayError(f"{o.display}/{sh['file']}: {table.num_rows} rows, the manifest says {sh['rows']}")
        yield table.column(id_column).to_numpy(zero_copy_only=False), vectors_of(table.column(EMBEDDING))


def load_embeddings(out: str | os.PathLike, verify: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` of a complete output directory, in input (corpus) order; ``verify`` checks sha256s."""
    o = _Out(out, create=False)
    manifest = _read_manifest(o)
    if manifest is None:
        raise TasbRayError(f"{o.display}: no {MANIFEST}: not an embeddings directory, or its encoding did not finish")
    ids = np.empty(manifest["rows"], dtype=object)
    vectors = np.empty((manifest["rows"], manifest["dim"]), dtype=np.float32)
    pos = 0
    for i, v in iter_shards(out, verify=verify):
        ids[pos:pos + len(i)] = i
        vectors[pos:pos + len(i)] = v
        pos += len(i)
    if pos != manifest["rows"]:
        raise TasbRayError(f"{o.display}: {pos} rows in the shards, the manifest says {manifest['rows']}")
    return ids, vectors


def _build_index(out: _Out, kind: str, meta: dict, n_shards: int) -> dict:
    """A faiss index over the shards, saved as ``out/index`` (DenseIndex layout)."""
    import tempfile

    import faiss

    from tasb_ray.retrieval.dense import DenseIndex

    ids_parts, vec_parts = [], []
    index = None
    for ids, vectors in _iter_written_shards(out, n_shards):
        ids_parts.append(ids)
        if kind == "ivf":
            vec_parts.append(vectors)
            continue
        if index is None:
            dim = vectors.shape[1]
            index = faiss.IndexFlatIP(dim) if kind == "flat" else faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.add(np.ascontiguousarray(vectors))  # shard by shard: one copy of the vectors, in the index
    doc_ids = np.concatenate(ids_parts)
    if kind == "ivf":
        dense = DenseIndex(doc_ids, np.concatenate(vec_parts), kind="ivf", meta=meta)
    else:
        dense = DenseIndex(doc_ids, index=index, meta={**meta, "kind": kind})
    if out.local is not None:
        dense.save(out.local / INDEX_DIR)
    else:
        import pyarrow.fs as pafs

        with tempfile.TemporaryDirectory() as tmp:
            dense.save(Path(tmp) / INDEX_DIR)
            out.delete(INDEX_DIR)
            pafs.copy_files(str(Path(tmp) / INDEX_DIR), out.join(INDEX_DIR), destination_filesystem=out.fs)
    return {"kind": kind, "path": INDEX_DIR, "rows": int(len(doc_ids))}


def _iter_written_shards(out: _Out, n_shards: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import pyarrow.parquet as pq

    for s in range(n_shards):
        with out.fs.open_input_file(out.join(shard_name(s))) as f:
            table = pq.read_table(f)
        yield table.column(0).to_numpy(zero_copy_only=False), vectors_of(table.column(EMBEDDING))


# --- public entry points -----------------------------------------------------------------------------------


def encode_corpus(ds, model: str, out: str | os.PathLike, *, pooling: str = "auto", normalize: bool | None = None,
                  passage_max_len: int | None = None, batch_size: int = 64, block_rows: int = 1024,
                  shard_rows: int = 10_000, num_actors: int | None = None, cpus_per_actor: int | None = None,
                  use_gpu: bool | str = "auto", index: str | None = None, shared_fs: bool = False,
                  overwrite: bool = False, fail_after_shards: int | None = None, show_progress: bool = True,
                  address: str | None = None, ray_temp_dir: str | os.PathLike | None = None,
                  ray_num_cpus: int | None = None, stats: dict | None = None) -> Path | str:
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
        stats: filled with ``encoded_shards``, ``reused_shards`` and timings (``first_shard_s``, ``encode_s``,
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
                      ray_num_cpus=ray_num_cpus, stats=stats if stats is not None else {})
    return _run(_corpus_input(ds, shared_fs), model, out, o)


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
    return _run(_queries_input(ds, split), model, out, o)


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of an output directory, or None while its encoding is incomplete."""
    return _read_manifest(_Out(out, create=False))
