"""BM25 over a corpus with bm25s (Lucene scoring, English stopwords, Snowball stemming)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.retrieval.runs import topk_to_run


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
        import bm25s

        self.params = params
        self.doc_ids = np.asarray(doc_ids, dtype=object)
        self._stemmer = None
        if params.stemmer:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(params.stemmer)
        self._show = show_progress
        self.retriever = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
        self.retriever.index(self.tokenize(texts), show_progress=show_progress)

    def tokenize(self, texts: Sequence[str]):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.params.stopwords, stemmer=self._stemmer,
                              show_progress=False)

    def search(self, query_ids: Sequence[str], texts: Sequence[str], k: int = 1000) -> pd.DataFrame:
        k = min(k, len(self.doc_ids))
        tokens = self.tokenize(texts)
        indices, scores = self.retriever.retrieve(tokens, k=k, show_progress=self._show, n_threads=0)
        # bm25s fills a query's tail with zero-score docs when fewer than k match; they are not results.
        indices = np.where(scores > 0, indices, -1)
        return topk_to_run(query_ids, self.doc_ids, indices, scores)
