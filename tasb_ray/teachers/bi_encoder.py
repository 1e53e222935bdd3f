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

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.models.encoder import BertDot
from tasb_ray.teachers._neural import pick_device
from tasb_ray.teachers.base import Teacher
from tasb_ray.teachers.config import SIMILARITIES
from tasb_ray.teachers.vector_store import MappedVectors, VectorTable, l2_normalise


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

    Vectors computed elsewhere are kept apart from the bounded cache, never evicted, and looked up first: those of the
    ``teacher-vectors`` stage (:mod:`tasb_ray.pipeline.teacher_vectors`) are memory-mapped from its ``.npy`` files
    with :meth:`map_vectors`, so only the rows a batch scores are read (the corpus's vectors are never all in RAM);
    a matrix in RAM is handed in with :meth:`load_vectors`.
    """

    name = "bi-encoder"

    def __init__(self, model: str | os.PathLike, similarity: str = "dot", max_query_len: int = 32,
                 max_passage_len: int = 256, batch_size: int = 32, device: str | None = None,
                 cache_size: int = 1_000_000):
        if similarity not in SIMILARITIES:
            raise ConfigError(f"bi-encoder: similarity must be one of {SIMILARITIES}, got {similarity!r}")
        self.similarity = similarity
        self.batch_size = batch_size
        self.encoder = BertDot(model, query_max_len=max_query_len, passage_max_len=max_passage_len)
        self.encoder.to(pick_device(device)).eval()
        self.cache_size = cache_size
        self._cache: dict[str, dict[str, np.ndarray]] = {"query": {}, "passage": {}}
        self._loaded: dict[str, VectorTable | MappedVectors] = {"query": VectorTable(), "passage": VectorTable()}

    def encode(self, texts: Sequence[str], kind: str) -> np.ndarray:
        """float32 ``[len(texts), dim]`` vectors, normalised when the similarity is cosine."""
        vec = self.encoder.encode(list(texts), kind, self.batch_size)
        if self.similarity == "cosine":
            vec = l2_normalise(vec)
        return vec

    def load_vectors(self, kind: str, ids: Sequence[str], matrix: np.ndarray) -> None:
        """Take ``matrix`` (raw encoder output, row ``i`` the vector of ``ids[i]``) as this teacher's vectors.

        Scoring then looks these ids up instead of encoding their texts. The rows are L2-normalised here when the
        similarity is cosine, exactly as :meth:`encode` does, so scores equal those of encoding on the fly. A
        later load replaces the vectors of ids loaded before.

        Args:
            kind: ``query`` or ``passage``.
            ids: one id per row of ``matrix``; unique.
            matrix: float ``[len(ids), dim]``, with ``dim`` the encoder's hidden size.

        Raises:
            TasbRayError: unknown kind, a shape that does not fit the encoder, duplicate ids, or vectors of this kind
                already memory-mapped (:meth:`map_vectors`).
        """
        table = self._table(kind)
        if not isinstance(table, VectorTable):
            raise TasbRayError(f"bi-encoder load_vectors({kind!r}): the {kind} vectors are memory-mapped from "
                               f"{table.matrix.filename}; load_vectors cannot add to them")
        vec = np.asarray(matrix, dtype=np.float32)
        if vec.ndim != 2 or vec.shape[0] != len(ids) or vec.shape[1] != self.encoder.dim:
            raise TasbRayError(f"bi-encoder load_vectors({kind!r}): matrix of shape {tuple(vec.shape)} for "
                               f"{len(ids)} ids; expected [{len(ids)}, {self.encoder.dim}]")
        if self.similarity == "cosine":
            vec = l2_normalise(vec)
        table.add([str(i) for i in ids], vec)

    def map_vectors(self, kind: str, directory: str | os.PathLike, dtype: str = "float32") -> None:
        """Score ``kind`` with the vectors of the ``.npy`` files in ``directory`` (raw encoder output stored as
        ``dtype``; :mod:`tasb_ray.teachers.vector_store`), memory-mapped: a batch reads only its own rows.

        Replaces vectors loaded before for ``kind``. Rows are L2-normalised as they are read when the similarity
        is cosine; at float32 the scores are those of :meth:`load_vectors` with the same matrix, bit for bit.

        Raises:
            TasbRayError: unknown kind, a missing or broken file (naming it), or another width than the encoder's.
        """
        self._table(kind)
        self._loaded[kind] = MappedVectors(directory, kind, dtype, normalize=self.similarity == "cosine",
                                           dim=self.encoder.dim)

    def export_vectors(self, kind: str) -> tuple[list[str], np.ndarray]:
        """``(ids, matrix)`` of every vector this teacher holds for ``kind``: loaded ones, then cached ones.

        The vectors are the ones scoring uses (L2-normalised when the similarity is cosine); all in RAM, so this is
        for inspection, not for a corpus the size of MS MARCO.
        """
        table = self._table(kind)
        cache = self._cache[kind]
        cached_ids = list(cache)
        extra = [i for i, p in zip(cached_ids, table.positions(cached_ids)) if p < 0]
        ids, matrix = table.all() if len(table) else ([], None)
        parts = [matrix] if len(table) else []
        if extra:
            parts.append(np.stack([cache[i] for i in extra]))
        matrix = np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), np.float32)
        return ids + extra, matrix

    def _table(self, kind: str) -> VectorTable | MappedVectors:
        if kind not in self._loaded:
            raise TasbRayError(f"bi-encoder: kind must be 'query' or 'passage', got {kind!r}")
        return self._loaded[kind]

    def precompute(self, ids: Sequence[str], texts: Sequence[str], kind: str) -> None:
        cache = self._cache[kind]
        loaded = self._table(kind)
        ids = [str(i) for i in ids]
        known = loaded.positions(ids) >= 0
        todo = {}
        for i, t, have in zip(ids, texts, known):
            if not have and i not in cache:
                todo.setdefault(i, t)
        if not todo:
            return
        if len(cache) + len(todo) > self.cache_size:
            cache.clear()
        vectors = self.encode(list(todo.values()), kind)
        cache.update(zip(todo, vectors))

    def vectors(self, ids: Sequence[str], texts: Sequence[str], kind: str) -> np.ndarray:
        """Vectors of ``texts``: loaded ones looked up by id, the rest encoded once per id and cached."""
        ids = [str(i) for i in ids]
        texts = list(texts)
        if not ids:
            return np.zeros((0, self.encoder.dim), np.float32)
        loaded = self._table(kind)
        pos = loaded.positions(ids)
        hit = pos >= 0
        if hit.all():
            return loaded.take(pos)
        miss = np.flatnonzero(~hit)
        rest_ids = [ids[i] for i in miss]
        rest_texts = [texts[i] for i in miss]
        self.precompute(rest_ids, rest_texts, kind)
        cache = self._cache[kind]
        if all(i in cache for i in rest_ids):
            rest = np.stack([cache[i] for i in rest_ids])
        else:
            rest = self.encode(rest_texts, kind)  # the batch alone overflowed the cache
        if not hit.any():
            return rest
        out = np.empty((len(ids), self.encoder.dim), dtype=np.float32)
        out[hit] = loaded.take(pos[hit])
        out[miss] = rest
        return out

    def score_batch(self, batch: pd.DataFrame) -> np.ndarray:
        self.check_batch(batch)
        q = self.vectors(batch["qid"].tolist(), batch["query"].tolist(), "query")
        p = self.vectors(batch["pid"].tolist(), batch["passage"].tolist(), "passage")
        return np.einsum("nd,nd->n", q, p).astype(np.float32)

    def score_matrix(self, qids, queries, pids, passages) -> np.ndarray:
        if not len(queries) or not len(passages):
            return np.zeros((len(queries), len(passages)), dtype=np.float32)
        return (self.vectors(qids, queries, "query") @ self.vectors(pids, passages, "passage").T).astype(np.float32)
