"""Building run tables (query_id, doc_id, score) from top-k arrays."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tasb_ray.schema import DOC_ID, QUERY_ID, SCORE


def topk_to_run(query_ids: Sequence[str], doc_ids: Sequence[str] | np.ndarray, indices: np.ndarray,
                scores: np.ndarray) -> pd.DataFrame:
    """``indices``/``scores`` are [n_queries, k]; negative indices (faiss's 'no result') are dropped."""
    # Only the retrieved ids become Python strings: a corpus's ids may be a NumPy string array.
    doc_ids = np.asarray(doc_ids) if isinstance(doc_ids, np.ndarray) else np.asarray(doc_ids, dtype=object)
    k = indices.shape[1]
    q = np.repeat(np.asarray(query_ids, dtype=object), k)
    idx = indices.reshape(-1)
    keep = idx >= 0
    return pd.DataFrame({QUERY_ID: q[keep], DOC_ID: doc_ids[idx[keep]].astype(object), SCORE: scores.reshape(-1)[keep].astype(float)})
