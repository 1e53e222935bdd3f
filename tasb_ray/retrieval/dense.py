"""Inner-product search with faiss over encoder embeddings: exact (flat) by default, or an index that fits memory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import faiss
import numpy as np
import pandas as pd

from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import atomic_dir, write_json
from tasb_ray.retrieval.ann import ANN_KINDS, IndexParams, build_index, faiss_threads, resolve_index
from tasb_ray.retrieval.runs import topk_to_run

INDEX_FILE = "index.faiss"
IDS_FILE = "doc_ids.parquet"
INDEX_KINDS = ("flat", "ivf", "hnsw", "ivf-pq", "hnsw-fp16")


class DenseIndex:
    """``IndexFlatIP`` by default; ``ivf`` and ``hnsw`` trade exactness for speed on large corpora, ``ivf-pq`` and
    ``hnsw-fp16`` (:mod:`tasb_ray.retrieval.ann`) also memory.

    ``doc_ids`` may be a NumPy string array (``<U``): a large corpus's ids then hold no Python object per row.
    ``params`` gives a resolved :class:`IndexParams` (``kind`` is then ignored).
    """

    def __init__(self, doc_ids: Sequence[str], vectors: np.ndarray | None = None, kind: str = "flat",
                 index=None, meta: dict | None = None, params: IndexParams | None = None):
        self.doc_ids = doc_ids if isinstance(doc_ids, np.ndarray) and doc_ids.dtype.kind in "OU" \
            else np.asarray(doc_ids, dtype=object)
        self.meta = dict(meta or {})
        if index is not None:
            self.index = index
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(self.doc_ids):
            raise ValueError(f"{len(vectors)} vectors for {len(self.doc_ids)} ids")
        dim = vectors.shape[1]
        if params is None and kind in ANN_KINDS and kind != "flat":
            params = resolve_index(kind, len(vectors), dim)
        if params is not None:
            self.index = build_index(params, vectors)
            self.meta.update(kind=params.kind, params=params.as_dict())
            return
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "ivf":
            nlist = max(1, min(4096, int(4 * np.sqrt(len(vectors)))))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
            self.index.nprobe = max(1, nlist // 8)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        else:
            raise TasbRayError(f"unknown index kind {kind!r} ({', '.join(INDEX_KINDS)})")
        # One thread for HNSW: its parallel insertion makes the graph depend on thread timing.
        with faiss_threads(1 if kind == "hnsw" else None):
            self.index.add(vectors)
        self.meta["kind"] = kind

    def search(self, query_ids: Sequence[str], query_vectors: np.ndarray, k: int = 1000) -> pd.DataFrame:
        k = min(k, len(self.doc_ids))
        scores, indices = self.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), k)
        return topk_to_run(query_ids, self.doc_ids, indices, scores)

    def save(self, path: str | os.PathLike) -> None:
        with atomic_dir(path) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            pd.DataFrame({"doc_id": self.doc_ids}).to_parquet(tmp / IDS_FILE, index=False)
            write_json(tmp / "index.json", {**self.meta, "rows": len(self.doc_ids)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DenseIndex":
        path = Path(path)
        if not (path / INDEX_FILE).is_file():
            raise TasbRayError(f"{path}: no saved dense index ({INDEX_FILE} missing)")
        ids = pd.read_parquet(path / IDS_FILE)["doc_id"].to_numpy()
        meta = json.loads((path / "index.json").read_text())
        return cls(ids, index=faiss.read_index(str(path / INDEX_FILE)), meta=meta)
