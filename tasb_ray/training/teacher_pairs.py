"""Training pairs straight from the TAS-B authors' teacher file, as the paper trained: its triples and its scores,
no first-stage retrieval and no rescoring (``candidates.sources: [teacher-file]``).

Ids are integer codes: ``q_row`` is a row of the prepared dataset's ``queries.parquet``, ``pos_row`` / ``neg_row``
rows of its ``corpus.parquet`` (the corpus ``row`` column). So the id tables are the dataset's own, and a batch's
texts are a ``take`` of those rows. The file is streamed (:func:`tasb_ray.data.teacher_file.iter_teacher_batches`);
what is held is five numeric columns, ~28 bytes a triple (1.1 GB for MS MARCO's 39.8M).
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasb_ray.data.ids import IdCodes
from tasb_ray.data.lines import iter_lines
from tasb_ray.data.teacher_file import iter_teacher_batches
from tasb_ray.errors import DataFormatError

log = logging.getLogger(__name__)

ROW_PAIRS_SCHEMA = pa.schema([("q_row", pa.int32()), ("pos_row", pa.int32()), ("neg_row", pa.int32()),
                              ("pos_score", pa.float64()), ("neg_score", pa.float64())])
# Map this many triples per call: the vectorised lookups amortise, and memory stays a few hundred MB above the result.
_GROUP_ROWS = 1 << 22


def _unknown(path, field: int, value: str, what: str, where: str) -> DataFormatError:
    """The error for the first line whose ``field`` (0-based column) is ``value`` (error path: one scan)."""
    for n, line in iter_lines(path):
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) > field and parts[field] == value:
            return DataFormatError(path, f"unknown {what} id {value!r} (not in the {where})", line=n)
    return DataFormatError(path, f"unknown {what} id {value!r} (not in the {where})")


def pairs_from_teacher_file(path: str | os.PathLike, query_ids, corpus_ids, train_qids,
                            group_rows: int = _GROUP_ROWS) -> tuple[pa.Table, dict]:
    """The file's triples as a table of :data:`ROW_PAIRS_SCHEMA`, in file order, with counts.

    Args:
        path: the authors' TSV (``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``).
        query_ids: every prepared query id, in ``queries.parquet`` order (the codes of ``q_row``).
        corpus_ids: the corpus ids in corpus row order.
        train_qids: the training split's query ids. Triples of other known queries (a dev split
            carved from train) are dropped and counted, so they never leak into training.

    Raises:
        DataFormatError: ``PATH:LINE: unknown query/document id ...`` for the first id of the file that is not in
            the prepared dataset, or the teacher file's own format errors.
    """
    queries, corpus = IdCodes(query_ids), IdCodes(corpus_ids)
    is_train = np.zeros(len(queries), dtype=bool)
    train_rows = queries.codes(train_qids)
    is_train[train_rows[train_rows >= 0]] = True
    parts: list[pa.Table] = []
    group: list[pa.RecordBatch] = []
    counts = {"lines": 0, "dropped_not_train": 0}

    def flush() -> None:
        if not group:
            return
        t = pa.Table.from_batches(group)
        group.clear()
        cols = {}
        for name, codes, field, what, where in (("q_row", queries, 2, "query", "queries"),
                                                ("pos_row", corpus, 3, "document", "corpus"),
                                                ("neg_row", corpus, 4, "document", "corpus")):
            src = {"q_row": "qid", "pos_row": "pos_pid", "neg_row": "neg_pid"}[name]
            c = codes.codes(t[src])
            if (c < 0).any():
                raise _unknown(path, field, t[src][int(np.argmax(c < 0))].as_py(), what, where)
            cols[name] = c
        keep = is_train[cols["q_row"]]
        counts["lines"] += len(keep)
        counts["dropped_not_train"] += int((~keep).sum())
        parts.append(pa.table({
            **{k: pa.array(v[keep].astype(np.int32)) for k, v in cols.items()},
            "pos_score": pa.array(t["pos_score"].to_numpy()[keep]),
            "neg_score": pa.array(t["neg_score"].to_numpy()[keep]),
        }, schema=ROW_PAIRS_SCHEMA))

    rows = 0
    for batch in iter_teacher_batches(path):
        group.append(batch)
        rows += batch.num_rows
        if rows >= group_rows:
            flush()
            rows = 0
    flush()
    table = pa.concat_tables(parts).combine_chunks() if parts else ROW_PAIRS_SCHEMA.empty_table()
    if counts["dropped_not_train"]:
        log.warning("teacher file %s: dropped %d triples of queries outside the training split",
                    path, counts["dropped_not_train"])
    return table, {**counts, "triples": table.num_rows}


def row_pair_stats(table: pa.Table) -> dict:
    """:func:`tasb_ray.training.pairs.pair_stats`' keys for a row-coded pairs table, without string ids."""
    if not table.num_rows:
        return {"queries": 0, "pairs": 0}
    q = table["q_row"].to_numpy()
    per_query = np.bincount(q)
    per_query = per_query[per_query > 0]
    margin = table["pos_score"].to_numpy() - table["neg_score"].to_numpy()
    return {"queries": int(len(per_query)), "pairs": int(table.num_rows),
            "pairs_per_query_mean": float(per_query.mean()), "pairs_per_query_min": int(per_query.min()),
            "pairs_per_query_max": int(per_query.max()), "margin_mean": float(margin.mean()),
            "margin_sd": float(margin.std()), "margin_min": float(margin.min()), "margin_max": float(margin.max()),
            "negative_margin_share": float((margin < 0).mean())}


def write_row_pairs(path: str | os.PathLike, table: pa.Table) -> None:
    pq.write_table(table.cast(ROW_PAIRS_SCHEMA), path)


def read_row_pairs(path: str | os.PathLike) -> pa.Table:
    """The table written by :func:`write_row_pairs`, each column one contiguous chunk (so its NumPy view is free).

    Read a column at a time: joining one column's row groups holds two copies of that column only, not of the
    whole table (1.1 GB for MS MARCO)."""
    names = pq.read_schema(path).names
    if names != ROW_PAIRS_SCHEMA.names:
        raise DataFormatError(path, f"columns {names}: expected {ROW_PAIRS_SCHEMA.names}")
    return pa.table({name: pq.read_table(path, columns=[name])[name].combine_chunks() for name in names})
