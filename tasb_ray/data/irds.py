"""Optional ir_datasets source (``pip install tasb-ray[irds]``). Only used when the package and its data are present."""

from __future__ import annotations

import importlib.util
import re
import sys

import pandas as pd

from tasb_ray.data.beir import passage_text
from tasb_ray.errors import ConfigError, TasbRayError
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


def _corpus(ds) -> pd.DataFrame:
    return pd.DataFrame(
        [(d.doc_id, passage_text(getattr(d, "title", "") or "", getattr(d, "text", "") or "")) for d in ds.docs_iter()],
        columns=[DOC_ID, TEXT])


def _qrels(ds) -> pd.DataFrame:
    return pd.DataFrame([(r.query_id, r.doc_id, int(r.relevance)) for r in ds.qrels_iter()],
                        columns=[QUERY_ID, DOC_ID, RELEVANCE])


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
    corpus = _corpus(ds)
    queries = pd.DataFrame([(q.query_id, q.text) for q in ds.queries_iter()], columns=[QUERY_ID, TEXT])
    qrels = _qrels(ds)
    last = dataset_id.rstrip("/").split("/")[-1]
    split = "dev" if last == "validation" else last if last in _SPLIT_NAMES else "test"
    return corpus, queries, {split: qrels}


# --- several ids, one docs store ------------------------------------------------------------------------------
# "irds:train=msmarco-passage/train/judged;dev=msmarco-passage/dev/small" names one dataset whose splits come
# from separate ir_datasets ids over the same documents (MS MARCO's train and dev are separate ids). Written as
# one string so that it resolves, caches and keys stages exactly as a single dataset name does.

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def is_split_spec(location: str) -> bool:
    return "=" in location


def split_spec(split_ids: dict[str, str], where: str = "irds_splits") -> str:
    """``{"train": "irds:a/train", "dev": "a/dev"}`` → ``"train=a/train;dev=a/dev"`` (checked).

    Splits go in a fixed order (train, dev, test, then others by name): the string is a cache and stage key.
    """
    if not isinstance(split_ids, dict) or not split_ids:
        raise ConfigError(f"{where}: expected a mapping of split name to ir_datasets id, e.g. "
                          "{train: irds:msmarco-passage/train/judged, dev: irds:msmarco-passage/dev/small}")
    parts = []
    order = {"train": 0, "dev": 1, "test": 2}
    for split, dataset_id in sorted(split_ids.items(), key=lambda kv: (order.get(kv[0], 3), str(kv[0]))):
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise ConfigError(f"{where}: split name {split!r} must be letters, digits, '_' or '-'")
        if not isinstance(dataset_id, str):
            raise ConfigError(f"{where}.{split}: expected an ir_datasets id string, got {dataset_id!r}")
        dataset_id = dataset_id.removeprefix("irds:").strip()
        if not dataset_id or any(c in dataset_id for c in "=; \t"):
            raise ConfigError(f"{where}.{split}: not an ir_datasets id: {split_ids[split]!r}")
        parts.append(f"{split}={dataset_id}")
    return ";".join(parts)


def parse_split_spec(location: str) -> dict[str, str]:
    """The inverse of :func:`split_spec` (``location`` without the ``irds:`` prefix)."""
    out: dict[str, str] = {}
    for part in location.split(";"):
        split, sep, dataset_id = part.partition("=")
        if not sep or not _SPLIT_NAME.match(split.strip()) or not dataset_id.strip():
            raise TasbRayError(f"irds:{location}: expected split=id pairs separated by ';', got {part!r}")
        if split.strip() in out:
            raise TasbRayError(f"irds:{location}: split {split.strip()!r} named twice")
        out[split.strip()] = dataset_id.strip()
    return out


def _docs_store(ir_datasets, dataset_id: str) -> str:
    """The id whose docs ``dataset_id`` uses (ir_datasets' own answer when it has one)."""
    parent = getattr(ir_datasets, "docs_parent_id", None)
    return parent(dataset_id) if parent is not None else dataset_id


def load_splits(split_ids: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Corpus (read once), queries (all splits') and qrels per split of several ids sharing one docs store."""
    if not available():
        first = next(iter(split_ids.values()))
        raise TasbRayError(f"{first}: ir_datasets is not installed (pip install 'tasb-ray[irds]')")
    import ir_datasets  # lazy: an optional extra (tasb-ray[irds]), needed only for irds: datasets

    loaded = {}
    for split, dataset_id in split_ids.items():
        try:
            loaded[split] = ir_datasets.load(dataset_id)
        except KeyError:
            raise TasbRayError(f"{dataset_id}: unknown ir_datasets id (split {split!r})") from None
        if not (loaded[split].has_docs() and loaded[split].has_queries() and loaded[split].has_qrels()):
            raise TasbRayError(f"{dataset_id}: needs docs, queries and qrels (split {split!r})")
    stores = {split: _docs_store(ir_datasets, split_ids[split]) for split in split_ids}
    if len(set(stores.values())) > 1:
        detail = ", ".join(f"{split_ids[s]} uses {d}" for s, d in stores.items())
        raise TasbRayError(f"ir_datasets ids do not share one docs store: {detail}")
    corpus = _corpus(next(iter(loaded.values())))
    frames, qrels = [], {}
    for split, ds in loaded.items():
        frames.append(pd.DataFrame([(q.query_id, q.text) for q in ds.queries_iter()], columns=[QUERY_ID, TEXT]))
        qrels[split] = _qrels(ds)
    queries = pd.concat(frames, ignore_index=True).drop_duplicates(ignore_index=True)
    dup = queries[QUERY_ID].duplicated()
    if dup.any():
        qid = queries[QUERY_ID][dup].iloc[0]
        raise TasbRayError(f"query id {qid!r} has different texts in {', '.join(split_ids.values())}")
    return corpus, queries, qrels
