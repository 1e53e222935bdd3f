"""MS MARCO / TREC files: collection.tsv, queries TSV, TREC qrels and TREC run files."""

from __future__ import annotations

import os

import pandas as pd

from tasb_ray.data.lines import UniqueIds, iter_lines, parse_float, parse_int, split_columns
from tasb_ray.errors import DataFormatError
from tasb_ray.fileio import atomic_path
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, SCORE, TEXT


def _read_id_text_tsv(path, id_col: str, what: str) -> pd.DataFrame:
    ids, texts = [], []
    unique = UniqueIds(path, what)
    for n, line in iter_lines(path):
        parts = split_columns(path, n, line, 2)
        key = parts[0].strip()
        if not key:
            raise DataFormatError(path, "empty id", line=n, field=id_col)
        unique.add(n, key)
        ids.append(key)
        texts.append(parts[1].strip())
    return pd.DataFrame({id_col: ids, TEXT: texts})


def read_collection_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """MS MARCO ``collection.tsv``: ``pid<TAB>text``."""
    return _read_id_text_tsv(path, DOC_ID, "document id")


def read_queries_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """MS MARCO queries: ``qid<TAB>text``."""
    return _read_id_text_tsv(path, QUERY_ID, "query id")


def read_trec_qrels(path: str | os.PathLike) -> pd.DataFrame:
    """TREC qrels: ``qid iteration docid grade`` separated by whitespace."""
    rows = []
    seen = UniqueIds(path, "judgement for (query, document)")
    for n, line in iter_lines(path):
        qid, _, did, grade = split_columns(path, n, line, 4, sep=None)
        seen.add(n, f"{qid}\t{did}")
        rows.append((qid, did, parse_int(path, n, grade, "grade")))
    return pd.DataFrame(rows, columns=[QUERY_ID, DOC_ID, RELEVANCE])


def read_trec_run(path: str | os.PathLike) -> pd.DataFrame:
    """TREC run: ``qid Q0 docid rank score tag``."""
    rows = []
    seen = UniqueIds(path, "result for (query, document)")
    for n, line in iter_lines(path):
        qid, _, did, rank, score, _tag = split_columns(path, n, line, 6, sep=None)
        parse_int(path, n, rank, "rank")
        seen.add(n, f"{qid}\t{did}")
        rows.append((qid, did, parse_float(path, n, score, "score")))
    return pd.DataFrame(rows, columns=[QUERY_ID, DOC_ID, SCORE])


def sort_run(run: pd.DataFrame) -> pd.DataFrame:
    """Order by query, then score descending, then doc id (trec_eval's tie order is by doc id)."""
    return run.sort_values([QUERY_ID, SCORE, DOC_ID], ascending=[True, False, True], kind="stable").reset_index(drop=True)


def write_trec_run(run: pd.DataFrame, path: str | os.PathLike, tag: str = "tasb-ray") -> None:
    run = sort_run(run)
    rank = run.groupby(QUERY_ID, sort=False).cumcount() + 1
    lines = (
        run[QUERY_ID].astype(str) + " Q0 " + run[DOC_ID].astype(str) + " " + rank.astype(str) + " "
        + run[SCORE].map(lambda s: f"{s:.6f}").astype(str) + f" {tag}"
    )
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + ("\n" if len(lines) else ""))
