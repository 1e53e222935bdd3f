"""A BERT-DOT bi-encoder as a teacher: ``score(q, p) = sim(enc(q), enc(p))``.

References:
    Hofstätter et al., "Efficiently Teaching an Effective Dense Retriever with Balanced Topic Aware
    Sampling", SIGIR 2021 (BERT_DOT); Reimers & Gurevych, "Sentence-BERT", EMNLP 2019 (cosine scoring).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.errors import ConfigError
from tasb_ray.teachers.base import Teacher
from tasb_ray.teachers.config import SIMILARITIES


class BiEncoderTeacher(Teacher):
    """Wraps :class:`tasb_ray.models.encoder.BertDot`; the model's own pooling is kept.

    Args:
        model: HF id, local path or short name.
        similarity: ``dot`` (raw pooled vectors) or ``cosine`` (L2-normalised first).
        max_query_len, max_passage_len: truncation lengths in tokens.
        batch_size: texts per forward pass (length-sorted, see ``BertDot.encode``).
        device: torch device; ``None`` picks CUDA when available.
        cache_size: vectors kept per side, keyed by query / passage id. The same passage recurs across
            many pairs and every training step, and re-encoding it dominated the cost. When full, the
            cache is cleared (memory stays bounded: 10^6 MiniLM vectors are 1.5 GB).
    """

    name = "bi-encoder"

    def __init__(self, model: str | os.PathLike, similarity: str = "dot", max_query_len: int = 32,
                 max_passage_len: int = 256, batch_size: int = 32, device: str | None = None,
                 cache_size: int = 1_000_000):
        from tasb_ray.models.encoder import BertDot
        from tasb_ray.teachers._neural import pick_device

        if similarity not in SIMILARITIES:
            raise ConfigError(f"bi-encoder: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.similarity = similarity
        self.batch_size = batch_size
        self.encoder = BertDot(model, query_max_len=max_query_len, passage_max_len=max_passage_len)
        self.encoder.to(pick_device(device)).eval()
        self.cache_size = cache_size
        self._cache: dict[str, dict[str, np.ndarray]] = {"query": {}, "passage": {}}

    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """float32 ``[len(texts), dim]`` vectors, normalised when the similarity is cosine."""
        vec = self.encoder.encode(list(texts), kind, self.batch_size)
        if self.similarity == "cosine":
            vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return vec

    def precompute(self, ids: Sequence[str], texts: Sequence[str], kind: str) -> None:
        cache = self._cache[kind]
        todo = {}
        for i, t in zip(map(str, ids), texts):
            if i not in cache:
                todo.setdefault(i, t)
        if not todo:
            return
        if len(cache) + len(todo) > self.cache_size:
            cache.clear()
        vectors = self.encode(list(todo.values()), kind)
        cache.update(zip(todo, vectors))

    def vectors(self, ids: Sequence[str], texts: Sequence[str], kind: str) -> np.ndarray:
        """Vectors of ``texts``, encoding only ids not seen before."""
        ids = [str(i) for i in ids]
        self.precompute(ids, texts, kind)
        cache = self._cache[kind]
        if all(i in cache for i in ids):
            return np.stack([cache[i] for i in ids]) if ids else np.zeros((0, self.encoder.dim), np.float32)
        return self.encode(list(texts), kind)  # the batch alone overflowed the cache

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        q = self.vectors(batch["qid"].tolist(), batch["query"].tolist(), "query")
        p = self.vectors(batch["pid"].tolist(), batch["passage"].tolist(), "passage")
        return np.einsum("nd,nd->n", q, p).astype(np.float32)

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        if not len(queries) or not len(passages):
            return np.zeros((len(queries), len(passages)), dtype=np.float32)
        return (self.vectors(qids, queries, "query") @ self.vectors(pids, passages, "passage").T).astype(np.float32)
