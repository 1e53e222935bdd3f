"""BM25 as a teacher: Lucene BM25 scores of arbitrary (query, pid) pairs over a corpus's statistics.

The index (and so the tokenisation: English stopwords, Snowball stemming) is
:class:`tasb_ray.retrieval.bm25.BM25Index`, the same as first-stage BM25 retrieval, so the teacher's
score of a pair equals the score BM25 retrieval gives that document.

References:
    Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009.
    Lù, "BM25S: Orders of magnitude faster lexical search via eager sparse scoring", arXiv 2407.03618.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import TasbRayError
from tasb_ray.retrieval.bm25 import BM25Index, BM25Params
from tasb_ray.schema import DOC_ID, TEXT
from tasb_ray.teachers.base import Teacher, factorize


class BM25Teacher(Teacher):
    """Scores ``(query, pid)`` pairs with BM25; the ``passage`` column is not read (the corpus is).

    Args:
        corpus: a ``doc_id, text`` frame whose statistics (df, average length) BM25 uses.
        corpus_path: a corpus Parquet file, read when ``corpus`` is not given (lets a Ray actor build
            the teacher from a path instead of receiving the corpus pickled).
        k1, b: BM25 parameters.
    """

    name = "bm25"
    required_columns = ("qid", "pid", "query")

    def __init__(self, corpus: pd.DataFrame | None = None, corpus_path: str | os.PathLike | None = None,
                 k1: float = 0.9, b: float = 0.4):
        if corpus is None:
            if corpus_path is None:
                raise TasbRayError("bm25 teacher needs the corpus (doc_id, text) or a corpus Parquet path")
            corpus = pd.read_parquet(corpus_path, columns=[DOC_ID, TEXT])
        missing = [c for c in (DOC_ID, TEXT) if c not in corpus.columns]
        if missing:
            raise TasbRayError(f"bm25 teacher: corpus lacks column(s) {missing}")
        doc_ids = corpus[DOC_ID].astype(str).to_numpy()
        self.index = BM25Index(doc_ids, corpus[TEXT].tolist(), BM25Params(k1=k1, b=b))
        self._row = pd.Index(doc_ids)
        if not self._row.is_unique:
            dup = self._row[self._row.duplicated()][0]
            raise TasbRayError(f"bm25 teacher: corpus doc_id {dup!r} appears more than once")

    def doc_scores(self, queries: Sequence[str]) -> Iterator[np.ndarray]:
        """Per query (lazily: one corpus-sized array at a time), its BM25 score of every corpus document."""
        # lazy: bm25s may be imported only through import_bm25s (it pins JAX to the CPU first)
        from bm25s.tokenization import convert_tokenized_to_string_list

        tokens = convert_tokenized_to_string_list(self.index.tokenize(list(queries)))
        retriever = self.index.retriever
        n_docs = len(self._row)
        for t in tokens:
            # A query of only stopwords / unseen words has no tokens; bm25s.get_scores fails on an empty list.
            yield retriever.get_scores(t) if t else np.zeros(n_docs, dtype=np.float32)

    def _rows(self, pids: Sequence[str], qids: Sequence[str] | None = None) -> np.ndarray:
        rows = self._row.get_indexer(pd.Index([str(p) for p in pids]))
        if (rows < 0).any():
            i = int(np.argmax(rows < 0))
            where = f" (query {qids[i]!r})" if qids is not None else ""
            raise TasbRayError(f"bm25 teacher: passage id {str(pids[i])!r}{where} is not in the corpus")
        return rows

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        rows = self._rows(batch["pid"].tolist(), batch["qid"].tolist())
        uniq, code = factorize(batch["query"].tolist())
        out = np.empty(len(batch), dtype=np.float32)
        for u, scores in enumerate(self.doc_scores(uniq)):
            sel = code == u
            out[sel] = scores[rows[sel]]
        return out

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        rows = self._rows(list(pids))
        if not len(queries):
            return np.zeros((0, len(rows)), dtype=np.float32)
        return np.stack([s[rows] for s in self.doc_scores(list(queries))]).astype(np.float32)
