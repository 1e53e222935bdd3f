"""The corpus index a model is evaluated with: encoded in process for small corpora, on Ray Data at corpus scale.

Below ``ray_min_passages`` passages the corpus is encoded in the caller's process (``BertDot.encode``, as always);
at or above it, the model is saved and the corpus goes through the sharded encoder
(:func:`tasb_ray.distributed.encode.encode_corpus`: every Ray worker, fixed row-range shards, a manifest written
last). The shards live in ``<work_dir>/corpus-<weights sha256[:16]>``: an evaluation interrupted mid-encoding
and run again with the same weights keeps every finished shard and encodes only the rest. The index is then
built shard by shard (:func:`tasb_ray.distributed.encode.index_of`), so no more than one shard's vectors, the
seeded training sample and the index itself are in memory.

Both paths give the same vectors up to float rounding: the sharded encoder pads each text to its own length
(:func:`tasb_ray.distributed.batch_encoder.encode_bucketed`), the in-process encoder pads a length-sorted batch
to its longest text, and padding is masked.

The index: ``flat`` (exact; the default, and what small corpora always had), ``ivf-pq``, ``hnsw-fp16`` or
``auto`` (:func:`tasb_ray.retrieval.ann.resolve_index`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasb_ray.distributed.batch_encoder import model_fingerprint
from tasb_ray.distributed.encode import encode_corpus, index_of, read_manifest
from tasb_ray.distributed.options import RayOptions
from tasb_ray.errors import TasbRayError
from tasb_ray.evaluation.first_stage import build_dense_index
from tasb_ray.fileio import atomic_dir
from tasb_ray.retrieval.ann import check_index_choice, resolve_index
from tasb_ray.retrieval.dense import DenseIndex
from tasb_ray.schema import DOC_ID, TEXT

log = logging.getLogger(__name__)

MODEL_DIR = "model"
SHARDS_PREFIX = "corpus-"
GIB = 1 << 30


@dataclass(frozen=True)
class CorpusIndexOptions:
    """How the corpus is encoded and indexed for evaluation.

    Args:
        index: ``flat``, ``ivf-pq``, ``hnsw-fp16`` or ``auto``.
        memory_gb: the memory ``auto`` may give a flat float32 index (GiB).
        nprobe: IVF-PQ lists searched per query (default: the corpus-scaled one).
        ray_min_passages: corpora of at least this many passages are encoded on Ray Data.
        batch_size: rows per forward pass.
    """

    index: str = "flat"
    memory_gb: float = 4.0
    nprobe: int | None = None
    ray_min_passages: int = 1_000_000
    batch_size: int = 64

    def __post_init__(self):
        check_index_choice(self.index)

    @classmethod
    def from_eval(cls, e) -> CorpusIndexOptions:
        """From a training config's ``eval`` section (:class:`tasb_ray.training.config.EvalConfig`)."""
        return cls(index=e.index, memory_gb=e.index_memory_gb, nprobe=e.nprobe, ray_min_passages=e.ray_min_passages,
                   batch_size=e.batch_size)

    def on_ray(self, passages: int) -> bool:
        """Whether a corpus of ``passages`` is encoded on Ray Data (the one place this rule lives)."""
        return passages >= self.ray_min_passages

    def params(self, rows: int, dim: int):
        return resolve_index(self.index, rows, dim, self.memory_gb * GIB, self.nprobe)


def corpus_index(encoder, corpus: pd.DataFrame, options: CorpusIndexOptions | None = None, *, dataset=None,
                 work_dir: str | os.PathLike | None = None, ray: RayOptions | None = None,
                 show_progress: bool = False, stats: dict | None = None) -> DenseIndex:
    """The index of ``corpus`` (``doc_id, text``) encoded by ``encoder``.

    Args:
        encoder: a :class:`tasb_ray.models.encoder.BertDot`.
        corpus: the passages, in the prepared dataset's corpus order.
        options: index kind, Ray threshold, batch size.
        dataset: the :class:`tasb_ray.data.PreparedDataset` the corpus comes from (the Ray path reads its
            ``corpus.parquet``).
        work_dir: where the Ray path keeps the saved model and the shards (resumable).
        ray: how the Ray pipeline runs (cluster, actor pool, shard size).
        show_progress: progress bars.
        stats: filled with ``path`` (``in-process`` or ``ray``) and, on the Ray path, the encoder's statistics.
    """
    o = options or CorpusIndexOptions()
    stats = stats if stats is not None else {}
    if not o.on_ray(len(corpus)):
        stats["path"] = "in-process"
        if o.index == "flat":  # exactly what evaluation always did
            return build_dense_index(encoder, corpus, o.batch_size, show_progress=show_progress)
        vectors = encoder.encode(corpus[TEXT].tolist(), "passage", o.batch_size, show_progress=show_progress)
        return DenseIndex(corpus[DOC_ID].to_numpy(), vectors, params=o.params(len(corpus), encoder.dim),
                          meta={"model": encoder.model_name})
    if dataset is None or work_dir is None:
        raise TasbRayError(f"evaluation of {len(corpus)} passages (>= ray_min_passages {o.ray_min_passages}) runs on "
                           "Ray Data and needs the prepared dataset and a work directory")
    stats["path"] = "ray"
    return _ray_index(encoder, dataset, Path(work_dir), o, ray or RayOptions(), show_progress, stats)


def _ray_index(encoder, dataset, work: Path, o: CorpusIndexOptions, ray: RayOptions, show_progress: bool,
               stats: dict) -> DenseIndex:
    work.mkdir(parents=True, exist_ok=True)
    with atomic_dir(work / MODEL_DIR) as tmp:
        encoder.save(tmp)
    model = work / MODEL_DIR
    # Same weights, same directory: a rerun after an interruption finds its finished shards.
    shards = work / f"{SHARDS_PREFIX}{model_fingerprint(str(model))[:16]}"
    spec = encoder.spec
    encode_stats: dict = {}
    encode_corpus(dataset, str(model), shards, pooling=spec.pooling, normalize=spec.normalize,
                  passage_max_len=spec.passage_max_len, batch_size=o.batch_size, shard_rows=ray.shard_rows,
                  show_progress=show_progress, stats=encode_stats, placement_group=ray.placement_group, **ray.pool())
    stats.update(encode_stats, shards=str(shards))
    for old in work.glob(f"{SHARDS_PREFIX}*"):
        if old != shards:  # earlier weights' vectors: never read again, and 13.5 GB each on MS MARCO
            shutil.rmtree(old, ignore_errors=True)
    return index_of(shards, o.params(int(read_manifest(shards)["rows"]), encoder.dim),
                    meta={"dataset": dataset.name})
