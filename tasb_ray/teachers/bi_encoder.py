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
from tasb_ray.teachers.base import Teacher, factorize
from tasb_ray.teachers.config import SIMILARITIES


class BiEncoderTeacher(Teacher):
    """Wraps :class:`tasb_ray.models.encoder.BertDot`; the model's own pooling is kept.

    Args:
        model: HF id, local path or short name.
        similarity: ``dot`` (raw pooled vectors) or ``cosine`` (L2-normalised first).
        max_query_len, max_passage_len: truncation lengths in tokens.
        batch_size: texts per forward pass (length-sorted, see ``BertDot.encode``).
        device: torch device; ``None`` picks CUDA when available.
    """

    name = "bi-encoder"

    def __init__(self, model: str | os.PathLike, similarity: str = "dot", max_query_len: int = 32,
                 max_passage_len: int = 256, batch_size: int = 32, device: str | None = None):
        from tasb_ray.models.encoder import BertDot
        from tasb_ray.teachers._neural import pick_device

        if similarity not in SIMILARITIES:
            raise ConfigError(f"bi-encoder: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.similarity = similarity
        self.batch_size = batch_size
        self.encoder = BertDot(model, query_max_len=max_query_len, passage_max_len=max_passage_len)
        self.encoder.to(pick_device(device)).eval()

    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """float32 ``[len(texts), dim]`` vectors, normalised when the similarity is cosine."""
        vec = self.encoder.encode(list(texts), kind, self.batch_size)
        if self.similarity == "cosine":
            vec /= np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        return vec

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        uq, qi = factorize(batch["query"].tolist())
        up, pi = factorize(batch["passage"].tolist())
        q = self.encode(uq, "query")
        p = self.encode(up, "passage")
        return np.einsum("nd,nd->n", q[qi], p[pi]).astype(np.float32)

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        if not len(queries) or not len(passages):
            return np.zeros((len(queries), len(passages)), dtype=np.float32)
        return (self.encode(list(queries), "query") @ self.encode(list(passages), "passage").T).astype(np.float32)
