"""The TAS-B authors' teacher-score file: ``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``.

The file has one line per (query, positive, negative) triple: ~40M lines for MS MARCO. It is read in
line-aligned byte blocks; a block of plain lines (ASCII, no spaces or other padding, no empty fields) is parsed by
``pyarrow.csv`` into columns, and any other block (or one Arrow rejects, or one with a non-finite score) is parsed
line by line with the original rules, which either accept it with the same values or name the exact line at fault.
Both paths give the same table, so the fast path is an optimisation only.

Deviations from a plain ``float()`` per field (this module's reader before issue 13): NaN and infinite scores
are rejected (one would silently poison a Margin-MSE loss), and bytes that are not UTF-8 are a one-line error.
Ids stay strings, this project's id type, even where all of them are integers.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from tasb_ray.data.lines import block_lines, has_lone_cr, iter_line_blocks, parse_float, split_columns
from tasb_ray.errors import DataFormatError
from tasb_ray.fileio import atomic_path
from tasb_ray.schema import PAIRS_COLUMNS

_FIELDS = ("pos_score", "neg_score", "qid", "pos_pid", "neg_pid")
_ID_FIELDS = _FIELDS[2:]
_SCORE_FIELDS = _FIELDS[:2]

#: The pairs table as Arrow reads it (the column order of :data:`tasb_ray.schema.PAIRS_COLUMNS`).
PAIRS_SCHEMA = pa.schema([("qid", pa.string()), ("pos_pid", pa.string()), ("neg_pid", pa.string()),
                          ("pos_score", pa.float64()), ("neg_score", pa.float64())])
assert tuple(PAIRS_SCHEMA.names) == PAIRS_COLUMNS

DEFAULT_BLOCK_SIZE = 16 << 20

_READ = pacsv.ReadOptions(column_names=list(_FIELDS), block_size=1 << 20)
# quote_char=False: the authors' file never quotes, and a quote in an id must stay part of it (as str.split keeps it).
_PARSE = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, ignore_empty_lines=True)
_CONVERT = pacsv.ConvertOptions(
    column_types={**{f: pa.float64() for f in _SCORE_FIELDS}, **{f: pa.string() for f in _ID_FIELDS}},
    null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
    check_utf8=False,  # only ASCII blocks reach Arrow
)
# Whitespace the line-by-line rules strip from a field (besides the tab and line breaks that split the file).
# Single bytes only: `in` is a memchr for them, while two-byte patterns such as b"\t\t" scan ~20x slower.
_PADDING = (b" ", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x1f")


def _plain(block: bytes) -> bool:
    """Whether Arrow's parse of ``block`` means what the line-by-line rules mean (cheap byte scans only).

    Empty fields are left to :func:`_parse_arrow`: Arrow rejects an empty score and reads an empty id as ''.
    """
    if not block.isascii() or any(p in block for p in _PADDING):
        return False
    return not has_lone_cr(block)


def _parse_arrow(block: bytes) -> pa.Table | None:
    """Columns of a plain block, or None when the block needs the line rules (a bad line, or a score that is
    not finite)."""
    try:
        table = pacsv.read_csv(pa.BufferReader(block), read_options=_READ, parse_options=_PARSE,
                               convert_options=_CONVERT)
    except pa.ArrowInvalid:
        return None
    if not table.num_rows:
        return table.select(list(PAIRS_COLUMNS))
    for f in _SCORE_FIELDS:
        # is_finite is false for NaN and ±inf (Arrow parses 'nan', 'inf', '1e999' without complaint).
        if not pc.all(pc.is_finite(table[f])).as_py():
            return None
    for f in _ID_FIELDS:
        if pc.min(pc.binary_length(table[f])).as_py() == 0:
            return None
    return table.select(list(PAIRS_COLUMNS))


def _parse_lines(path, block: bytes, first_line: int) -> pa.Table:
    """The line rules: the original reader's (fields stripped, blank lines skipped), plus finite scores."""
    cols: dict[str, list] = {c: [] for c in PAIRS_COLUMNS}
    for n, line in block_lines(path, block, first_line):
        parts = [p.strip() for p in split_columns(path, n, line, 5)]
        for name, value in zip(_ID_FIELDS, parts[2:]):
            if not value:
                raise DataFormatError(path, "empty id", line=n, field=name)
            cols[name].append(value)
        for name, value in zip(_SCORE_FIELDS, parts[:2]):
            x = parse_float(path, n, value, name)
            if not math.isfinite(x):
                raise DataFormatError(path, f"not a finite number: {value!r}", line=n, field=name)
            cols[name].append(x)
    return pa.Table.from_pydict(cols, schema=PAIRS_SCHEMA)


def iter_teacher_batches(path: str | os.PathLike, block_size: int = DEFAULT_BLOCK_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream the authors' TSV as record batches of the pairs schema (:data:`PAIRS_SCHEMA`).

    Memory is bounded by ``block_size`` (plus the batches the caller keeps). A malformed line raises
    :class:`DataFormatError` naming it (``PATH:LINE: problem``) when its block is reached, so batches before it
    may already have been yielded. A file without any triple raises after the last block.
    """
    rows = 0
    for first_line, block in iter_line_blocks(path, block_size):
        table = _parse_arrow(block) if _plain(block) else None
        if table is None:
            table = _parse_lines(path, block, first_line)
        rows += table.num_rows
        yield from table.to_batches()
    if not rows:
        raise DataFormatError(path, "no teacher scores in file")


def read_teacher_table(path: str | os.PathLike, block_size: int = DEFAULT_BLOCK_SIZE) -> pa.Table:
    """The whole file as one Arrow table of the pairs schema (the way to load MS MARCO's ~40M triples)."""
    return pa.Table.from_batches(iter_teacher_batches(path, block_size), schema=PAIRS_SCHEMA)


def read_teacher_tsv(path: str | os.PathLike) -> pd.DataFrame:
    """Read the authors' TSV into the project's pairs table (``qid, pos_pid, neg_pid, pos_score, neg_score``)."""
    # self_destruct frees each Arrow column as it is converted, so the peak is not two copies of the table.
    return read_teacher_table(path).to_pandas(self_destruct=True, split_blocks=True)


def write_teacher_tsv(pairs: pd.DataFrame, path: str | os.PathLike) -> None:
    """Export a pairs table back to the authors' TSV layout."""
    missing = [c for c in PAIRS_COLUMNS if c not in pairs.columns]
    if missing:
        raise ValueError(f"pairs table lacks columns {missing}")
    cols = pairs[list(_FIELDS)]
    with atomic_path(path) as tmp:
        cols.to_csv(tmp, sep="\t", header=False, index=False, float_format="%.6f")
