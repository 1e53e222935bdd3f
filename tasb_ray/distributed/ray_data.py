"""The Ray Data side of sharded encoding: what is encoded, actor-pool sizing, and the streaming pipeline.

Encoding: ``read_parquet`` (``local://``: read on the driver's node, so workers need not share its disk) → filter to
the missing shards' rows → ``map_batches(EncoderActor, ActorPoolStrategy)`` (model loaded once per actor; one GPU
per actor where the cluster has GPUs, else CPU actors with their share of threads) → ``iter_batches`` in row order;
the driver writes each shard as soon as its rows are in (:class:`tasb_ray.distributed.shards.ShardWriter`), so it
holds at most about one shard.

Inside a sweep trial (``placement_group=True``) the pipeline runs in the trial's own placement group instead of on
the cluster's free CPUs: the trial reserved, beside its trainer's bundle, one bundle per encoder actor and one
1-CPU bundle for Ray Data's read and map tasks (:func:`trial_bundles`), so trials that hold every CPU of the
cluster still evaluate (without the reservation they waited for CPUs no one would free).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data.expressions import col, lit
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
from tqdm.auto import tqdm

from tasb_ray.distributed.batch_encoder import ROW, EncoderActor, placements_of
from tasb_ray.distributed.runtime import cluster_cpus_gpus, node_cpus, ray_session
from tasb_ray.distributed.shards import OutputDir, ShardPlan, ShardWriter, row_ranges
from tasb_ray.errors import TasbRayError
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT

log = logging.getLogger(__name__)


class InjectedFailure(TasbRayError):
    """Raised by ``fail_after_shards``: a simulated crash for tests."""


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
    placement_group: bool = False
    stats: dict = field(default_factory=dict)


@dataclass
class EncodeInput:
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
        if self.frame is not None:
            return pa.array(self.frame[self.id_column].astype(str).tolist(), type=pa.string())
        col = pq.read_table(self.parquet, columns=[self.id_column]).column(0)
        return col.combine_chunks().cast(pa.string())

    def dataset(self, row_ranges: list[tuple[int, int]], block_rows: int, strategy=None):
        """A Ray Dataset of ``row, id, text`` restricted to ``row_ranges`` (``[start, end)``, sorted).

        ``strategy``: the placement-group scheduling strategy the block runs under (:func:`data_context`). The file
        is then read by its plain path: a ``local://`` read is pinned to the node by a label and leaves any
        placement group, and the group's bundles are on the caller's node (:func:`trial_bundles` packs them
        strictly).
        """
        if self.frame is not None:
            keep = np.zeros(self.rows, dtype=bool)
            for a, b in row_ranges:
                keep[a:b] = True
            part = self.frame[keep]
            blocks = [part.iloc[s:s + block_rows].reset_index(drop=True) for s in range(0, len(part), block_rows)]
            return ray.data.from_pandas(blocks)
        path = str(self.parquet)
        with warnings.catch_warnings():
            # ``local://`` is deprecated in Ray 2.60 (removal announced after January 2027) but is what reads on
            # the driver's node without assuming that workers share its disk; --shared-fs avoids it.
            warnings.filterwarnings("ignore", message=".*local://.*")
            # In a placement group the read tasks take the DataContext's strategy (set by data_context), and the
            # plain path keeps them in the group (``ray_remote_args`` here is deprecated, removed in Ray 2.64).
            ds = ray.data.read_parquet(path if self.shared_fs or strategy is not None else f"local://{path}")
        if row_ranges != [(0, self.rows)]:
            expr = None
            for a, b in row_ranges:
                term = (col(ROW) >= lit(int(a))) & (col(ROW) < lit(int(b)))
                expr = term if expr is None else expr | term
            ds = ds.filter(expr=expr)
        # Streaming re-blocking (no shuffle): a small corpus is one Parquet block, and an actor pool only spreads
        # work over actors block by block.
        return ds.select_columns([ROW, self.id_column, TEXT]).repartition(target_num_rows_per_block=block_rows)


def corpus_input(ds, shared_fs: bool) -> EncodeInput:
    path = Path(ds.corpus_path).resolve()
    schema = pq.read_schema(path)
    if ROW not in schema.names:
        raise TasbRayError(f"{path}: prepared corpus has no '{ROW}' column (an older cache format); "
                           "re-run 'tasb-ray prepare-data' to rebuild it")
    rows = pq.read_metadata(path).num_rows
    identity = {"name": ds.name, "table": "corpus.parquet", "sha256": ds.table_sha256("corpus.parquet"),
                "rows": int(rows)}
    return EncodeInput("passage", DOC_ID, int(rows), identity, parquet=path, shared_fs=shared_fs)


def queries_input(ds, split: str | None) -> EncodeInput:
    q = ds.queries(split)[[QUERY_ID, TEXT]].reset_index(drop=True)
    q[QUERY_ID] = q[QUERY_ID].astype(str)
    q[ROW] = np.arange(len(q), dtype=np.int64)
    h = hashlib.sha256()
    for qid, text in zip(q[QUERY_ID], q[TEXT]):
        h.update(f"{qid}\t{text}\n".encode())
    identity = {"name": ds.name, "table": "queries.parquet", "split": split, "sha256": h.hexdigest(),
                "rows": len(q)}
    return EncodeInput("query", QUERY_ID, len(q), identity, frame=q)


@contextlib.contextmanager
def data_context(preserve_order: bool = False, strategy=None):
    """Ray Data settings for the datasets built and run in the block, restored afterwards.

    ``strategy``: the scheduling strategy of every map task (filter, column selection, re-blocking). Ray Data
    gives its tasks ``SPREAD`` explicitly, which leaves the caller's placement group; inside a trial's group they
    must stay in it. ``DataContext.scheduling_strategy`` is deprecated in Ray 2.60 (removal announced after
    January 2027) but is the one setting that reaches those operators.
    """
    ctx = ray.data.DataContext.get_current()
    saved = (ctx.enable_progress_bars, ctx.execution_options.preserve_order)
    saved_strategy = (ctx.scheduling_strategy, ctx.scheduling_strategy_large_args)
    ctx.enable_progress_bars = False  # our own tqdm bar counts rows as shards are written
    ctx.execution_options.preserve_order = preserve_order
    if strategy is not None:
        _set_strategy(ctx, strategy, strategy)
    try:
        yield ctx
    finally:
        ctx.enable_progress_bars, ctx.execution_options.preserve_order = saved
        if strategy is not None:
            _set_strategy(ctx, *saved_strategy)


def _set_strategy(ctx, strategy, large_args) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*scheduling_strategy.*deprecated.*")
        ctx.scheduling_strategy = strategy
        ctx.scheduling_strategy_large_args = large_args


READER_BUNDLE = {"CPU": 1.0}


def trial_bundles(cpus: float, gpus: float, eval_workers: int) -> list[dict]:
    """A sweep trial's placement-group bundles when it evaluates on Ray Data.

    The trainer's bundle (``cpus``, ``gpus``) first (Tune runs the trainable in bundle 0), then ``eval_workers``
    encoder-actor bundles of the same shape (but at most one GPU each), then one CPU for Ray Data's read and map
    tasks. With no encoder workers, the trainer's bundle alone.
    """
    head = {"CPU": float(cpus), **({"GPU": float(gpus)} if gpus else {})}
    if eval_workers <= 0:
        return [head]
    # An encoder actor uses one device: a trial with several GPUs gets encoder bundles of one.
    worker = {"CPU": float(cpus), **({"GPU": float(min(gpus, 1.0))} if gpus else {})}
    return [head] + [dict(worker) for _ in range(int(eval_workers))] + [dict(READER_BUNDLE)]


@dataclass(frozen=True)
class GroupPool:
    """The encoder pool a placement group laid out by :func:`trial_bundles` holds."""

    actors: int
    resources: dict           # ``map_batches`` resources of one actor
    threads: int | None       # torch threads of a CPU actor
    use_gpu: bool


def group_pool(bundles: Sequence[dict]) -> GroupPool:
    """The encoder pool of a trial's placement group (its ``bundle_specs``); one actor per encoder bundle."""
    workers = list(bundles[1:-1])
    if len(bundles) < 3 or not workers or dict(bundles[-1]) != READER_BUNDLE:
        raise TasbRayError(f"placement group {list(bundles)} has no encoder bundles: a trial that evaluates on Ray "
                           "Data reserves them with resources.eval_workers >= 1")
    w = workers[0]
    gpus = float(w.get("GPU", 0.0))
    cpus = float(w.get("CPU", 0.0))
    resources = {"num_cpus": cpus, **({"num_gpus": gpus} if gpus else {})}
    return GroupPool(len(workers), resources, None if gpus else max(1, int(cpus)), gpus > 0)


def cpu_pool(cpus: float, num_actors: int | None = None, cpus_per_actor: int | None = None,
             node_cpus: Sequence[float] | None = None) -> tuple[int, int, float]:
    """(actors, torch threads per actor, logical CPUs each actor reserves) for CPU encoding on ``cpus`` CPUs.

    Threads: ``cpus_per_actor``, else the actor's share of the CPUs, so the pool never runs more threads than
    cores. Logical reservation: the threads, but shrunk so that one CPU stays free: Ray Data's file listing and
    read tasks each ask for a whole CPU, and an actor pool holding every CPU starves them (measured: a 2-actor
    pool on 2 CPUs never got its first block).

    ``node_cpus`` (CPUs per node) on a cluster of several nodes: one CPU stays free on *each* node, with the
    actors counted as spread evenly (Ray Data's default). A free CPU split in halves over two nodes fits no
    1-CPU task, and the ``local://`` read must run on the driver's node (measured: a 2-actor pool on two 1-CPU
    nodes deadlocked before its first block). On 1-CPU nodes the actors reserve no CPU
    (see :func:`cpu_actor_resources`).
    """
    if num_actors is None:
        num_actors = max(1, int(cpus // (cpus_per_actor or 1)))
    threads = int(cpus_per_actor) if cpus_per_actor else max(1, int(cpus // num_actors))
    nodes = [float(c) for c in (node_cpus or ()) if c > 0]
    if len(nodes) > 1:
        per_node = -(-int(num_actors) // len(nodes))
        share = max(0.0, min(nodes) - 1.0) / per_node
    else:
        share = max(0.0, cpus - 1.0) / num_actors
    logical = round(min(float(threads), share), 4)
    return int(num_actors), threads, logical


def gpu_pool(cpus: float, gpus: float, num_actors: int | None = None) -> tuple[int, dict]:
    """(actors, ``map_batches`` resources) for GPU encoding: one whole GPU per actor, one actor per GPU by default.

    Each actor also reserves up to one CPU (tokenization runs there), shrunk like :func:`cpu_pool`'s so that one
    CPU stays free for Ray Data's read tasks.
    """
    if gpus < 1:
        raise TasbRayError(f"use_gpu=True but the Ray cluster has {gpus:g} GPUs (an actor needs a whole one)")
    n = int(num_actors or max(1, int(gpus)))
    cpu = round(min(1.0, max(0.0, cpus - 1.0) / n), 4)
    return n, {"num_gpus": 1, "num_cpus": cpu}


TOKEN_MEMORY = 2**20


def cpu_actor_resources(logical_cpus: float) -> dict:
    """``map_batches`` resources of a CPU actor reserving ``logical_cpus``.

    Ray places a request for no resources at all on the caller's node, whatever the scheduling strategy (measured
    with two 1-CPU nodes: both zero-CPU actors on the head despite SPREAD); a token memory request (1 MiB) lets
    Ray Data's SPREAD put them on different nodes.
    """
    if logical_cpus > 0:
        return {"num_cpus": logical_cpus}
    return {"num_cpus": 0, "memory": TOKEN_MEMORY}


def encode_missing(inp: EncodeInput, name: str, spec: dict, out: OutputDir, plan: ShardPlan, missing: list[int], key: str,
                   o: EncodeOptions, shards: dict, timing: dict) -> tuple[int, dict[str, int]]:
    """Encode and write the ``missing`` shards (filling ``shards`` and ``timing``); (dim, rows per Ray node id)."""

    with ray_session(o.address, num_cpus=o.ray_num_cpus, temp_dir=o.ray_temp_dir):
        cpus, gpus = cluster_cpus_gpus()
        use_gpu = gpus > 0 if o.use_gpu == "auto" else bool(o.use_gpu)
        strategy = None
        if o.placement_group:
            pg = ray.util.get_current_placement_group()
            if pg is None:
                raise TasbRayError("placement_group=True but this process runs in no placement group "
                                   "(only a sweep trial that reserved encoder bundles does)")
            pool = group_pool(pg.bundle_specs)
            num_actors, resources, threads, use_gpu = pool.actors, dict(pool.resources), pool.threads, pool.use_gpu
            strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        elif use_gpu:
            num_actors, resources = gpu_pool(cpus, gpus, o.num_actors)
            threads = None
        else:
            num_actors, threads, logical = cpu_pool(cpus, o.num_actors, o.cpus_per_actor, node_cpus())
            resources = cpu_actor_resources(logical)
        todo_rows = sum(plan.bounds(s)[1] - plan.bounds(s)[0] for s in missing)
        # At least ~4 blocks per actor, so a small job does not end with one busy actor and the rest idle.
        block_rows = max(1, min(o.block_rows, -(-todo_rows // (4 * num_actors))))
        log.info("encoding %d shards (%d rows) with %d %s actor(s) (%s each), %d rows per block", len(missing),
                 todo_rows, num_actors, "GPU" if use_gpu else "CPU", resources, block_rows)
        o.stats["actor_pool"] = {"actors": num_actors, "resources": dict(resources), "use_gpu": use_gpu}
        if strategy is not None:
            o.stats["actor_pool"]["placement_group"] = True
        with data_context(preserve_order=True, strategy=strategy):
            return _stream(inp, name, spec, out, plan, missing, key, o, shards, timing, use_gpu, num_actors,
                           threads, resources, block_rows, strategy)


def _stream(inp: EncodeInput, name: str, spec: dict, out: OutputDir, plan: ShardPlan, missing: list[int], key: str,
            o: EncodeOptions, shards: dict, timing: dict, use_gpu: bool, num_actors: int, threads: int | None,
            resources: dict, block_rows: int, strategy=None) -> tuple[int, dict[str, int]]:
    """Run the Ray Data pipeline over the missing shards' rows and write each shard as it completes."""
    source = inp.dataset(row_ranges(plan, missing), block_rows, strategy)
    if strategy is not None:
        resources = {**resources, "scheduling_strategy": strategy}
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

    writer = ShardWriter(out, plan, missing, inp.id_column, key, on_written)
    batches = encoded.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
    seen: set[str] = set()
    try:
        for batch in batches:
            seen.update(placements_of(batch))
            writer.add(batch)
        # device|GPU ids|CUDA_VISIBLE_DEVICES as each actor saw it: which GPU each one held, if any.
        o.stats["actors_saw"] = sorted(seen)
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
    return writer.dim, writer.rows_by_node
