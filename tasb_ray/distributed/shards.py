"""Embedding shards on a pyarrow filesystem: the output directory, the manifest, the shard writer and readers.

Layout of an output directory (local path or a pyarrow-filesystem URI)::

    shard-00000.parquet   doc_id: string, embedding: fixed_size_list<float32>[dim]; rows [0, S)
    shard-00001.parquet   rows [S, 2S) ...
    index/                optional faiss index (DenseIndex.save), loadable by ``tasb-ray evaluate --index``
    manifest.json         written LAST: model, encoder spec, dim, rows, dataset identity, shards (rows, sha256)

A shard is a fixed row range of the input, written atomically with a footer record (run key, shard index, first
row, rows), so a rerun keeps every shard whose footer matches. The manifest names shard files; a reader accepts
only names of the form ``shard-NNNNN.parquet`` inside the directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from tasb_ray.distributed.batch_encoder import EMBEDDING, NODE, ROW, fixed_size_list, vectors_of
from tasb_ray.errors import TasbRayError
from tasb_ray.schema import DOC_ID

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
INDEX_DIR = "index"
FOOTER_KEY = b"tasb_ray"
SHARD_NAME = re.compile(r"shard-\d{5,}\.parquet")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.parquet"


def checked_shard_file(out: "OutputDir", name) -> str:
    """A manifest's shard entry, refused unless it is a plain shard file name (no path: nothing outside ``out``)."""
    if not isinstance(name, str) or not SHARD_NAME.fullmatch(name):
        raise TasbRayError(f"{out.display}/{MANIFEST}: shard file {name!r} is not a shard name "
                           "(shard-NNNNN.parquet inside the directory)")
    return name


class OutputDir:
    """An output directory on a pyarrow filesystem: local path or URI."""

    def __init__(self, out: str | os.PathLike, create: bool = True):
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
        return self.fs.get_file_info(self.join(name)).type != pafs.FileType.NotFound

    def size(self, name: str) -> int:
        return int(self.fs.get_file_info(self.join(name)).size)

    def names(self) -> list[str]:
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


def read_manifest_of(out: OutputDir) -> dict | None:
    if not out.exists(MANIFEST):
        return None
    return json.loads(out.read_bytes(MANIFEST))


@dataclass
class ShardPlan:
    rows: int
    shard_rows: int

    @property
    def n_shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.shard_rows, min((i + 1) * self.shard_rows, self.rows)


def read_footer(out: OutputDir, name: str) -> tuple[int, dict] | None:
    """(num_rows, tasb_ray footer record) of a shard file; None when unreadable."""
    try:
        with out.fs.open_input_file(out.join(name)) as f:
            md = pq.read_metadata(f)
        meta = md.schema.to_arrow_schema().metadata or {}
        return md.num_rows, json.loads(meta.get(FOOTER_KEY, b"{}"))
    except Exception as e:  # noqa: BLE001 - a damaged file counts as missing
        log.warning("%s: unreadable shard (%s); it will be encoded again", out.join(name), e)
        return None


def shard_bytes(ids: np.ndarray, vectors: np.ndarray, id_column: str, record: dict):
    table = pa.table({id_column: pa.array(ids, type=pa.string()), EMBEDDING: fixed_size_list(vectors)})
    table = table.replace_schema_metadata({FOOTER_KEY: json.dumps(record, sort_keys=True).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression={id_column: "zstd", EMBEDDING: "none"},
                   use_dictionary=[id_column], write_statistics=[id_column])
    return sink.getvalue()


class ShardWriter:
    """Collects encoded rows from the stream and writes each shard once all its rows are in.

    ``rows_by_node`` counts the rows received per Ray node (batches with a ``node`` column): where the work ran.
    """

    def __init__(self, out: OutputDir, plan: ShardPlan, todo: Iterable[int], id_column: str, key: str,
                 on_written: Callable[[int, dict], None]):
        self.out, self.plan, self.id_column, self.key = out, plan, id_column, key
        self.todo = set(todo)
        self.parts: dict[int, list] = {}
        self.count: dict[int, int] = {}
        self.on_written = on_written
        self.dim: int | None = None
        self.rows_by_node: dict[str, int] = {}

    def add(self, batch) -> None:
        rows = batch.column(ROW).to_numpy()
        if len(rows) == 0:
            return
        if NODE in batch.column_names:
            for item in pc.value_counts(batch.column(NODE)).to_pylist():
                self.rows_by_node[item["values"]] = self.rows_by_node.get(item["values"], 0) + item["counts"]
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
        data = shard_bytes(ids, vectors, self.id_column, record)
        self.out.write_atomic(shard_name(s), data)
        self.todo.discard(s)
        del self.count[s]
        self.on_written(s, {"file": shard_name(s), "rows": end - start, "first_row": start,
                            "bytes": data.size, "sha256": hashlib.sha256(data).hexdigest()})


def row_ranges(plan: ShardPlan, shards: Sequence[int]) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` row ranges covering ``shards`` (sorted)."""
    ranges: list[list[int]] = []
    for s in sorted(shards):
        a, b = plan.bounds(s)
        if ranges and ranges[-1][1] == a:
            ranges[-1][1] = b
        else:
            ranges.append([a, b])
    return [(a, b) for a, b in ranges]


def iter_shards(out: str | os.PathLike, verify: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` per shard, in row order, of a complete output directory."""
    o = OutputDir(out, create=False)
    manifest = read_manifest_of(o)
    if manifest is None:
        raise TasbRayError(f"{o.display}: no {MANIFEST}: not an embeddings directory, or its encoding did not finish "
                           "(run the same command again to resume)")
    id_column = manifest.get("id_column", DOC_ID)
    for sh in manifest["shards"]:
        checked_shard_file(o, sh.get("file"))
        if verify and o.sha256(sh["file"]) != sh["sha256"]:
            raise TasbRayError(f"{o.display}/{sh['file']}: sha256 differs from the manifest (file changed)")
        with o.fs.open_input_file(o.join(sh["file"])) as f:
            table = pq.read_table(f)
        if table.num_rows != sh["rows"]:
            raise TasbRayError(f"{o.display}/{sh['file']}: {table.num_rows} rows, the manifest says {sh['rows']}")
        yield table.column(id_column).to_numpy(zero_copy_only=False), vectors_of(table.column(EMBEDDING))


def load_embeddings(out: str | os.PathLike, verify: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, vectors)`` of a complete output directory, in input (corpus) order; ``verify`` checks sha256s."""
    o = OutputDir(out, create=False)
    manifest = read_manifest_of(o)
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


def iter_written_shards(out: OutputDir, n_shards: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for s in range(n_shards):
        with out.fs.open_input_file(out.join(shard_name(s))) as f:
            table = pq.read_table(f)
        yield table.column(0).to_numpy(zero_copy_only=False), vectors_of(table.column(EMBEDDING))


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of an output directory, or None while its encoding is incomplete."""
    return read_manifest_of(OutputDir(out, create=False))
