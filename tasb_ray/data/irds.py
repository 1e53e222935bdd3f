"""Optional ir_datasets source (``pip install tasb-ray[irds]``). Only used when the package and its data are present."""

from __future__ import annotations

import importlib.util
import sys

import pandas as pd

from tasb_ray.data.beir import passage_text
from tasb_ray.errors import TasbRayError
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, TEXT

_SPLIT_NAMES = {"train", "dev", "test", "validation"}


def available() -> bool:
    # A module already in sys.modules counts even without a __spec__ (find_spec raises ValueError then).
    if sys.modules.get("ir_datasets") is not None:
        return True
    try:
        return importlib.util.find_spec("ir_datasets") is not None
    except (ImportError, ValueError):
        return False


def load(dataset_id: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Corpus, queries and qrels of one ir_datasets id; the split is named by the id's last part."""
    if not available():
        raise TasbRayError(f"{dataset_id}: ir_datasets is not installed (pip install 'tasb-ray[irds]')")
    import ir_datasets  # lazy: an optional extra (tasb-ray[irds]), needed only for irds: datasets

    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise TasbRayError(f"{dataset_id}: unknown ir_datasets id") from None
    if not (ds.has_docs() and ds.has_queries() and ds.has_qrels()):
        raise TasbRayError(f"{dataset_id}: needs docs, queries and qrels")
    corpus = pd.DataFrame(
        [(d.doc_id, passage_text(getattr(d, "title", "") or "", getattr(d, "text", "") or "")) for d in ds.docs_iter()],
        columns=[DOC_ID, TEXT])
    queries = pd.DataFrame([(q.query_id, q.text) for q in ds.queries_iter()], columns=[QUERY_ID, TEXT])
    qrels = pd.DataFrame([(r.query_id, r.doc_id, int(r.relevance)) for r in ds.qrels_iter()],
                         columns=[QUERY_ID, DOC_ID, RELEVANCE])
    last = dataset_id.rstrip("/").split("/")[-1]
    split = "dev" if last == "validation" else last if last in _SPLIT_NAMES else "test"
    return corpus, queries, {split: qrels}
