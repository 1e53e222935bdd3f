"""Choosing and building a faiss index that fits memory: exact flat, IVF-PQ, or HNSW over fp16 vectors.

A flat fp32 index of MS MARCO (8,841,823 passages) is 13.6 GB at 384 dimensions and 27 GB at 768: more than a
24 GiB machine can hold next to anything else. :func:`resolve_index` turns a kind (``flat``, ``ivf-pq``,
``hnsw-fp16`` or ``auto``) and the corpus's shape into :class:`IndexParams`; ``auto`` keeps the exact flat index
while ``rows x dim x 4`` bytes fit the memory budget and takes IVF-PQ otherwise. Every index is made by faiss's
own ``index_factory``; nothing here is a hand-written nearest-neighbour search.

Parameters scale with the corpus (``N`` rows, ``d`` dimensions), because small corpora make IVF-PQ's choices
matter:

* ``IVF{nlist},PQ{m}x{nbits}np``: ``nlist = min(4 sqrt(N), N / 39, 65536)`` (``4 sqrt(N)`` is faiss's usual
  lower end; ``N / 39`` keeps faiss's minimum of 39 training points per list on small corpora); ``m`` the largest
  divisor of ``d`` up to ``d / 2`` (``d / 2`` bytes per vector at 8 bits: 192 B at 384 dimensions, 8x smaller than
  fp32; 1.7 GB for MS MARCO); ``nbits = 8`` once the training sample has 1,024 rows; ``nprobe = ceil(nlist / 4)``
  lists per query. Measured on SciFact (``benchmarks/results/index_choice.md``): ``d / 4`` bytes or
  ``nlist / 8`` lists lose clearly more of flat's top 100 (overlap@100 0.89 with every list probed at ``d / 4``,
  0.83 at ``nlist / 8`` lists with ``d / 2``), so the defaults favour an evaluation close to exact over speed;
  ``np``: no polysemous training (it serves Hamming pre-filtering, which is not used, and took minutes).
* ``HNSW32,SQfp16``: 32 links per node over fp16 vectors (2 bytes a dimension plus ~256 B of links per vector);
  ``efSearch = 128`` (faiss searches with ``max(efSearch, k)``).

Determinism: the training sample is drawn with a seeded generator (``sample_rows``), faiss's k-means gets the
same seed, and HNSW graphs are built on one thread (faiss's multi-threaded insertion order depends on thread
timing). The same vectors and seed then give the same index, and on CPU the same search results. Flat and IVF-PQ
indexes are the same whether the vectors are added at once or shard by shard; an HNSW graph is not (faiss inserts
each added batch level by level), so it depends on the shard size too.

References:
    Jégou, Douze & Schmid, "Product Quantization for Nearest Neighbor Search", TPAMI 2011 (IVF-PQ).
    Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using Hierarchical Navigable
    Small World graphs", TPAMI 2018 (HNSW). Johnson, Douze & Jégou, "Billion-scale similarity search with GPUs"
    (faiss, its index factory).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from tasb_ray.errors import ConfigError, TasbRayError

ANN_KINDS = ("flat", "ivf-pq", "hnsw-fp16")
INDEX_CHOICES = (*ANN_KINDS, "auto")
HNSW_LINKS = 32
HNSW_EF_SEARCH = 128
MAX_NLIST = 65536
MIN_TRAIN = 1 << 16


@dataclass(frozen=True)
class IndexParams:
    """A resolved index: faiss factory string, search settings and training sample size.

    Args:
        kind: one of :data:`ANN_KINDS` (never ``auto``: resolved).
        factory: the ``faiss.index_factory`` description.
        nprobe: IVF lists searched per query (IVF-PQ only).
        ef_search: HNSW candidate list size (HNSW only).
        train_rows: rows of the seeded training sample (0: the index needs no training).
        seed: seed of the training sample and of faiss's k-means.
    """

    kind: str
    factory: str
    nprobe: int | None = None
    ef_search: int | None = None
    train_rows: int = 0
    seed: int = 0

    def as_dict(self) -> dict:
        return {"kind": self.kind, "factory": self.factory, "nprobe": self.nprobe, "ef_search": self.ef_search,
                "train_rows": self.train_rows, "seed": self.seed}


def flat_bytes(rows: int, dim: int) -> int:
    """Bytes of a flat float32 index of ``rows`` vectors of ``dim`` dimensions."""
    return int(rows) * int(dim) * 4


def check_index_choice(kind, field: str = "index") -> None:
    """One-line :class:`ConfigError` unless ``kind`` is one of :data:`INDEX_CHOICES`."""
    if kind not in INDEX_CHOICES:
        raise ConfigError(f"{field}: must be one of {', '.join(INDEX_CHOICES)}, got {kind!r}")


def resolve_index(kind: str, rows: int, dim: int, memory_budget_bytes: float | None = None,
                  nprobe: int | None = None, seed: int = 0) -> IndexParams:
    """The index for ``rows`` vectors of ``dim`` dimensions.

    Args:
        kind: ``flat``, ``ivf-pq``, ``hnsw-fp16`` or ``auto`` (flat while :func:`flat_bytes` fits
            ``memory_budget_bytes``, else ``ivf-pq``).
        rows, dim: the corpus's shape.
        memory_budget_bytes: the bytes ``auto`` may give a flat index (required for ``auto``).
        nprobe: IVF lists per query (default ``ceil(nlist / 4)``).
        seed: training sample and k-means seed.
    """
    check_index_choice(kind)
    if rows < 1 or dim < 1:
        raise ConfigError(f"index: needs at least one vector of at least one dimension, got {rows} x {dim}")
    if kind == "auto":
        if memory_budget_bytes is None:
            raise ConfigError("index: 'auto' needs a memory budget")
        kind = "flat" if flat_bytes(rows, dim) <= memory_budget_bytes else "ivf-pq"
    if kind == "flat":
        return IndexParams("flat", "Flat", seed=seed)
    if kind == "hnsw-fp16":
        return IndexParams("hnsw-fp16", f"HNSW{HNSW_LINKS},SQfp16", ef_search=HNSW_EF_SEARCH, seed=seed)
    nlist = max(1, min(int(4 * math.sqrt(rows)), rows // 39, MAX_NLIST))
    train_rows = min(rows, max(MIN_TRAIN, 32 * nlist))
    m = max(d for d in range(1, max(1, dim // 2) + 1) if dim % d == 0)
    nbits = 8 if train_rows >= 1024 else max(1, int(math.log2(train_rows)) - 2)
    if nprobe is not None and (not isinstance(nprobe, int) or isinstance(nprobe, bool) or nprobe < 1):
        raise ConfigError(f"nprobe: must be an integer >= 1 or null, got {nprobe!r}")
    probe = min(nlist, nprobe) if nprobe else max(1, -(-nlist // 4))
    return IndexParams("ivf-pq", f"IVF{nlist},PQ{m}x{nbits}np", nprobe=probe, train_rows=train_rows, seed=seed)


def sample_rows(rows: int, size: int, seed: int) -> np.ndarray:
    """``size`` distinct row numbers of ``0..rows-1``, sorted, drawn with ``seed`` (all rows when ``size >= rows``)."""
    if size >= rows:
        return np.arange(rows, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False)).astype(np.int64)


@contextlib.contextmanager
def faiss_threads(n: int | None) -> Iterator[None]:
    """faiss's OpenMP threads for the block (``None``: unchanged), restored afterwards."""
    if n is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class IndexBuilder:
    """An index of :class:`IndexParams`, trained on a sample and then filled chunk by chunk (shards stream in).

    Inner product throughout (the models score by dot product; cosine models give normalised vectors).
    """

    def __init__(self, params: IndexParams, dim: int):
        self.params = params
        self.index = faiss.index_factory(int(dim), params.factory, faiss.METRIC_INNER_PRODUCT)
        if params.kind == "ivf-pq":
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = params.nprobe
            # The sample is sized on purpose (small corpora have few rows per list / per PQ centroid); faiss would
            # print a warning per sub-quantizer. The seed makes k-means repeatable.
            ivf.cp.seed = params.seed
            ivf.cp.min_points_per_centroid = 1
            pq = faiss.downcast_index(self.index).pq
            pq.cp.seed = params.seed
            pq.cp.min_points_per_centroid = 1
        elif params.kind == "hnsw-fp16":
            faiss.downcast_index(self.index).hnsw.efSearch = params.ef_search

    @property
    def needs_training(self) -> bool:
        return not self.index.is_trained

    def train(self, vectors: np.ndarray) -> None:
        self.index.train(np.ascontiguousarray(vectors, dtype=np.float32))

    def add(self, vectors: np.ndarray) -> None:
        # One thread for HNSW: its parallel insertion makes the graph depend on thread timing.
        with faiss_threads(1 if self.params.kind == "hnsw-fp16" else None):
            self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))


def build_index(params: IndexParams, vectors: np.ndarray) -> faiss.Index:
    """The index of ``params`` over in-memory ``vectors`` (trained on the seeded sample first)."""
    builder = IndexBuilder(params, vectors.shape[1])
    if builder.needs_training:
        builder.train(vectors[sample_rows(len(vectors), params.train_rows, params.seed)])
    builder.add(vectors)
    return builder.index


def build_index_streaming(params: IndexParams, dim: int, rows: int,
                          chunks: Callable[[], Iterable[np.ndarray]]) -> faiss.Index:
    """The index of ``params`` over vectors that arrive in chunks (in row order), without holding them all.

    ``chunks()`` is called once to gather the training sample (when the index needs one) and once to add the
    vectors, so at most one chunk, the sample and the index are in memory.
    """
    builder = IndexBuilder(params, dim)
    if builder.needs_training:
        wanted = sample_rows(rows, params.train_rows, params.seed)
        sample = np.empty((len(wanted), dim), dtype=np.float32)
        start = filled = 0
        for vectors in chunks():
            end = start + len(vectors)
            take = wanted[(wanted >= start) & (wanted < end)]
            sample[filled:filled + len(take)] = vectors[take - start]
            filled += len(take)
            start = end
        if start != rows:  # the sample was drawn for `rows`: fewer or more would train on a skewed sample
            raise TasbRayError(f"index training: the chunks held {start} vectors, {rows} expected")
        builder.train(sample[:filled])
    for vectors in chunks():
        builder.add(vectors)
    return builder.index


def index_bytes(index: faiss.Index) -> int:
    """Bytes of the serialised index (what it holds in memory, up to small bookkeeping)."""
    return int(faiss.serialize_index(index).nbytes)
