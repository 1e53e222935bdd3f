"""BM25 over a corpus with bm25s (Lucene scoring, English stopwords, Snowball stemming)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import Stemmer

from tasb_ray.retrieval.runs import topk_to_run


def import_bm25s():
    """``bm25s``, imported so that it cannot take the GPU.

    With JAX installed, importing bm25s runs a JAX top-k, which starts JAX's default backend; on a GPU machine
    that backend reserves 75% of the GPU's memory per process. Seen on an H200 with JAX in the image: the BM25
    imports of two training processes held 105 and 33 GiB and the students ran out of memory. BM25 here works on
    NumPy arrays on the CPU, so JAX is pointed at the CPU unless ``JAX_PLATFORMS`` is already set.
    """
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import bm25s  # lazy: only after JAX_PLATFORMS is set, see above

    return bm25s


@dataclass(frozen=True)
class BM25Params:
    """Defaults are Anserini's BEIR settings (k1 0.9, b 0.4)."""

    k1: float = 0.9
    b: float = 0.4
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"


class BM25Index:
    def __init__(self, doc_ids: Sequence[str], texts: Sequence[str], params: BM25Params = BM25Params(),
                 show_progress: bool = False):
        bm25s = import_bm25s()
        self.params = params
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self._stemmer = None
        if params.stemmer:
            self._stemmer = Stemmer.Stemmer(params.stemmer)
        self._show = show_progress
        self.retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        self.retriever.index(self.tokenize(texts), show_progress=show_progress)

    def tokenize(self, texts: Sequence[str]):
        return import_bm25s().tokenize(list(texts), stopwords=self.params.stopwords, stemmer=self._stemmer,
                                       show_progress=False)

    def search(self, query_ids: Sequence[str], texts: Sequence[str], k: int = 1000) -> pd.DataFrame:
        k = min(k, len(self.doc_ids))
        tokens = self.tokenize(texts)
        # NumPy top-k even where JAX is installed: the same ranking (ties included) on every machine.
        indices, scores = self.retriever.retrieve(tokens, k=k, show_progress=self._show, n_threads=0,
                                                  backend_selection="numpy")
        # bm25s fills a query's tail with zero-score docs when fewer than k match; they are not results.
        indices = np.where(scores > 0, indices, -1)
        return topk_to_run(query_ids, self.doc_ids, indices, scores)
