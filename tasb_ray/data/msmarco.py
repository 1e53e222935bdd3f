"""MS MARCO's ``id<TAB>text`` files (``collection.tsv``, ``queries.*.tsv``) and TREC qrels, read as Arrow columns.

The collection has 8.8M lines (~3 GB): the line-by-line readers of :mod:`tasb_ray.data.trec` hold one Python string
per field and take minutes. Here a file is read in line-aligned byte blocks (:func:`tasb_ray.data.lines.iter_line_blocks`)
and each block parsed by ``pyarrow.csv``; a block Arrow rejects (wrong column count, bytes that are not UTF-8, a lone
``\\r``) or whose ids need stripping is parsed with the line rules of :mod:`tasb_ray.data.trec` instead, which give
the same values or name the exact line at fault. The two paths agree, so the fast one is an optimisation only.

Python's ``str.strip`` is the line rules' padding rule. Arrow does not strip, so a block's fields are checked at
their edges: a field whose first or last byte is whitespace, a control byte or non-ASCII (which might be Unicode
whitespace) is re-stripped in Python (texts) or sends the block to the line rules (ids). Such fields are rare.
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tasb_ray.data.lines import block_lines, has_lone_cr, iter_line_blocks, iter_lines, split_columns
from tasb_ray.data.trec import read_trec_qrels
from tasb_ray.errors import DataFormatError
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, TEXT

DEFAULT_BLOCK_SIZE = 16 << 20

_ID_TEXT = ["id", "text"]
_ID_TEXT_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])
_PARSE = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=True)
_ID_TEXT_CONVERT = pacsv.ConvertOptions(column_types={c: pa.string() for c in _ID_TEXT}, null_values=[],
                                        strings_can_be_null=False, quoted_strings_can_be_null=False)
_QRELS = ["qid", "iteration", "did", "grade"]
_QRELS_CONVERT = pacsv.ConvertOptions(column_types={c: pa.string() for c in _QRELS}, null_values=[],
                                      strings_can_be_null=False, quoted_strings_can_be_null=False)


def _edge_padded(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per field: empty, or first / last byte <= 0x20 or >= 0x80 (what ``str.strip`` might change)."""
    b = col.cast(pa.binary())
    out = None
    for edge in (pc.binary_slice(b, 0, 1), pc.binary_slice(b, -1)):
        bad = pc.or_(pc.less_equal(edge, pa.scalar(b" ")), pc.greater_equal(edge, pa.scalar(b"\x80")))
        out = bad if out is None else pc.or_(out, bad)
    return np.asarray(out.to_numpy(zero_copy_only=False), dtype=bool)


def _parse_arrow(block: bytes) -> pa.Table | None:
    """``id, text`` columns of a block, or None when it needs the line rules."""
    if has_lone_cr(block):
        return None
    try:
        table = pacsv.read_csv(pa.BufferReader(block), read_options=pacsv.ReadOptions(column_names=_ID_TEXT,
                               block_size=1 << 20), parse_options=_PARSE, convert_options=_ID_TEXT_CONVERT)
    except pa.ArrowInvalid:  # a line with another column count, or bytes that are not UTF-8
        return None
    if not table.num_rows:
        return table
    if _edge_padded(table["id"]).any():
        return None
    text = table["text"].combine_chunks()
    padded = _edge_padded(text)
    if padded.any():
        rows = np.flatnonzero(padded)
        stripped = pa.array([s.strip() for s in text.take(rows).to_pylist()], pa.string())
        text = pc.replace_with_mask(text, pa.array(padded), stripped)
    return pa.table({"id": table["id"].combine_chunks(), "text": text})


def _parse_lines(path, block: bytes, first_line: int, id_field: str) -> pa.Table:
    """The line rules of :func:`tasb_ray.data.trec.read_collection_tsv` (fields stripped, blank lines skipped)."""
    ids, texts = [], []
    for n, line in block_lines(path, block, first_line):
        parts = split_columns(path, n, line, 2)
        key = parts[0].strip()
        if not key:
            raise DataFormatError(path, "empty id", line=n, field=id_field)
        ids.append(key)
        texts.append(parts[1].strip())
    return pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())})


def iter_id_text_blocks(path: str | os.PathLike, block_size: int = DEFAULT_BLOCK_SIZE,
                        id_field: str = "id") -> Iterator[pa.Table]:
    """Stream an ``id<TAB>text`` file as tables ``id, text`` (ids not yet checked for duplicates); ``id_field``
    names the id in errors."""
    for first_line, block in iter_line_blocks(path, block_size):
        table = _parse_arrow(block)
        yield table if table is not None else _parse_lines(path, block, first_line, id_field)


def line_of_id(path, value: str) -> list[int]:
    """Lines whose id field is ``value`` (error path only: one streaming pass)."""
    return [n for n, line in iter_lines(path) if line.split("\t", 1)[0].strip() == value]


def first_duplicate(ids: pa.ChunkedArray | pa.Array) -> int | None:
    """Row of the first id that repeats an earlier one (file order), or None."""
    codes = pc.dictionary_encode(ids).combine_chunks() if isinstance(ids, pa.ChunkedArray) \
        else pc.dictionary_encode(ids)
    if len(codes.dictionary) == len(ids):
        return None
    idx = codes.indices.to_numpy(zero_copy_only=False)
    _, first = np.unique(idx, return_index=True)
    return int(np.flatnonzero(first[idx] != np.arange(len(idx)))[0])


def check_unique_ids(path, ids: pa.ChunkedArray | pa.Array, what: str) -> None:
    """One ``PATH:LINE`` error for the first repeated id, naming the line it first appeared on."""
    row = first_duplicate(ids)
    if row is None:
        return
    value = ids[row].as_py()
    lines = line_of_id(path, value)
    raise DataFormatError(path, f"duplicate {what} {value!r} (first at line {lines[0]})",
                          line=lines[1] if len(lines) > 1 else None)


def write_collection_parquet(path: str | os.PathLike, out: str | os.PathLike, row_group_rows: int,
                             block_size: int = DEFAULT_BLOCK_SIZE) -> pa.ChunkedArray:
    """``collection.tsv`` → Parquet ``doc_id, text, row`` in row groups of ``row_group_rows``, streamed.

    Holds one block of text at a time (plus the ids, which it returns for the reference checks).
    """
    schema = pa.schema([(DOC_ID, pa.string()), (TEXT, pa.string()), ("row", pa.int64())])
    ids: list[pa.Array] = []
    pending: list[pa.Table] = []
    pending_rows = rows = 0
    with pq.ParquetWriter(out, schema) as writer:
        def flush(final: bool) -> None:
            nonlocal pending, pending_rows
            if not pending:
                return
            table = pa.concat_tables(pending)
            cut = len(table) if final else len(table) // row_group_rows * row_group_rows
            if cut:
                writer.write_table(table.slice(0, cut), row_group_size=row_group_rows)
            pending = [table.slice(cut)] if cut < len(table) else []
            pending_rows = len(table) - cut

        for block in iter_id_text_blocks(path, block_size, DOC_ID):
            n = block.num_rows
            ids.append(block["id"].combine_chunks() if isinstance(block["id"], pa.ChunkedArray) else block["id"])
            pending.append(pa.table([block["id"], block["text"], pa.array(np.arange(rows, rows + n, dtype=np.int64))],
                                    schema=schema))
            rows += n
            pending_rows += n
            if pending_rows >= row_group_rows:
                flush(final=False)
        flush(final=True)
    out_ids = pa.chunked_array(ids, pa.string())
    check_unique_ids(path, out_ids, "document id")
    return out_ids


def read_id_text_table(path: str | os.PathLike, id_col: str, what: str,
                       block_size: int = DEFAULT_BLOCK_SIZE) -> pa.Table:
    """A whole ``id<TAB>text`` file as a table ``id_col, text``, ids checked unique."""
    blocks = list(iter_id_text_blocks(path, block_size, id_col))
    table = pa.concat_tables(blocks) if blocks else _ID_TEXT_SCHEMA.empty_table()
    check_unique_ids(path, table["id"], what)
    return table.rename_columns([id_col, TEXT])


def read_queries_frame(path: str | os.PathLike) -> pd.DataFrame:
    """MS MARCO queries ``qid<TAB>text`` as the project's ``query_id, text`` frame."""
    return read_id_text_table(path, QUERY_ID, "query id").to_pandas()


def read_qrels_frame(path: str | os.PathLike) -> pd.DataFrame:
    """TREC qrels ``qid iteration docid grade``; tab-separated files (MS MARCO's) are parsed by Arrow, anything the
    fast path does not take as is (spaces, padding, float grades, a repeated judgement) by the line reader."""
    if not os.path.isfile(path):
        raise DataFormatError(path, "file not found")
    with open(path, "rb") as f:
        data = f.read()  # qrels are small (MS MARCO train: 11 MB)
    table = None
    if not has_lone_cr(data):
        try:
            table = pacsv.read_csv(pa.BufferReader(data), read_options=pacsv.ReadOptions(column_names=_QRELS),
                                   parse_options=_PARSE, convert_options=_QRELS_CONVERT)
        except pa.ArrowInvalid:
            table = None
    if table is None or not table.num_rows or any(_edge_padded(table[c]).any() for c in ("qid", "did", "grade")):
        return read_trec_qrels(path)
    try:
        grade = pc.cast(table["grade"], pa.int64())
    except pa.ArrowInvalid:
        return read_trec_qrels(path)
    frame = pd.DataFrame({QUERY_ID: table["qid"].to_numpy(), DOC_ID: table["did"].to_numpy(),
                          RELEVANCE: grade.to_numpy()})
    if frame.duplicated([QUERY_ID, DOC_ID]).any():
        return read_trec_qrels(path)  # raises, naming both lines
    return frame
