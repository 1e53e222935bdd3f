"""Readers for the BEIR directory layout: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

Query ``metadata`` is never read: in SciFact it holds the relevance answers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from tasb_ray.data.lines import (
    UniqueIds,
    iter_jsonl,
    iter_lines,
    parse_int,
    require_id,
    require_text,
    split_columns,
)
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, TEXT


def passage_text(title: str, text: str) -> str:
    """``title + " " + text`` where a title exists (the BEIR / MTEB convention)."""
    title = title.strip()
    return f"{title} {text}".strip() if title else text.strip()


def read_corpus_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    ids, texts = [], []
    unique = UniqueIds(path, "document id")
    for n, obj in iter_jsonl(path):
        doc_id = require_id(path, n, obj, "_id")
        unique.add(n, doc_id)
        text = require_text(path, n, obj, "text")
        title = require_text(path, n, obj, "title", required=False)
        ids.append(doc_id)
        texts.append(passage_text(title, text))
    return pd.DataFrame({DOC_ID: ids, TEXT: texts})


def read_queries_jsonl(path: str | os.PathLike) -> pd.DataFrame:
    ids, texts = [], []
    unique = UniqueIds(path, "query id")
    for n, obj in iter_jsonl(path):
        qid = require_id(path, n, obj, "_id")
        unique.add(n, qid)
        ids.append(qid)
        texts.append(require_text(path, n, obj, "text").strip())
    return pd.DataFrame({QUERY_ID: ids, TEXT: texts})


def read_qrels_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """BEIR qrels: ``query-id<TAB>corpus-id<TAB>score`` with an optional header line."""
    rows = []
    seen = UniqueIds(path, "judgement for (query, document)")
    for n, line in iter_lines(path):
        parts = split_columns(path, n, line, 3)
        if n == 1 and parts[2].strip().lower() == "score":
            continue
        qid, did = parts[0].strip(), parts[1].strip()
        seen.add(n, f"{qid}\t{did}")
        rows.append((qid, did, parse_int(path, n, parts[2].strip(), "score")))
    return pd.DataFrame(rows, columns=[QUERY_ID, DOC_ID, RELEVANCE])


def beir_splits(root: str | os.PathLike) -> dict[str, Path]:
    qrels_dir = Path(root) / "qrels"
    if not qrels_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(qrels_dir.glob("*.tsv"))}


def is_beir_dir(root: str | os.PathLike) -> bool:
    root = Path(root)
    return (root / "corpus.jsonl").is_file() and (root / "queries.jsonl").is_file()
