"""The Arrow readers of MS MARCO's files: the line readers' values, their errors at the exact line, and the
``queries.dev.small.tsv`` beside ``queries.dev.tsv`` rule of prepare-data."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from tasb_ray.data import msmarco, trec
from tasb_ray.data.prepare import ROW, prepare_dataset
from tasb_ray.errors import DataFormatError
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT

# Padding, non-ASCII edges (a no-break space is whitespace to str.strip), quotes, blank and whitespace-only lines,
# CRLF, an empty text: everything the line rules define and Arrow alone would read differently.
AWKWARD = [
    "a1\tplain text", "a2\t  padded text  ", " a3 \tpadded id", "a4\t\u00e9t\u00e9 starts non-ASCII",
    "a5\t\u00a0no-break space\u00a0", "", "   ", 'a6\t"quoted" text', "a7\t", "a8\tlast\r",
]


def _plain_lines(n: int) -> list[str]:
    return [f"{i}\tpassage number {i} with some words" for i in range(n)]


@pytest.mark.parametrize("block_size", [64, 1 << 20])
def test_id_text_table_equals_line_reader(tmp_path, write_lines, block_size):
    p = write_lines(tmp_path / "collection.tsv", _plain_lines(40) + AWKWARD)
    got = msmarco.read_id_text_table(p, DOC_ID, "document id", block_size=block_size).to_pandas()
    want = trec.read_collection_tsv(p)
    assert got[DOC_ID].tolist() == want[DOC_ID].tolist()
    assert got[TEXT].tolist() == want[TEXT].tolist()
    assert got[DOC_ID].tolist()[40:] == [f"a{i}" for i in range(1, 9)]
    assert got[TEXT].tolist()[40:46] == ["plain text", "padded text", "padded id", "\u00e9t\u00e9 starts non-ASCII",
                                         "no-break space", '"quoted" text']


def test_collection_parquet_streams_row_groups_and_rows(tmp_path, write_lines):
    p = write_lines(tmp_path / "collection.tsv", _plain_lines(1000))
    ids = msmarco.write_collection_parquet(p, tmp_path / "c.parquet", row_group_rows=300, block_size=2048)
    f = pq.ParquetFile(tmp_path / "c.parquet")
    assert [f.metadata.row_group(i).num_rows for i in range(f.num_row_groups)] == [300, 300, 300, 100]
    t = f.read()
    assert t[ROW].to_pylist() == list(range(1000)) and t[DOC_ID].to_pylist() == [str(i) for i in range(1000)]
    assert ids.to_pylist() == [str(i) for i in range(1000)]


@pytest.mark.parametrize("bad, line, problem", [
    ("7\ttoo\tmany", 5, "expected 2 tab-separated columns, got 3"),
    ("  \tno id", 5, "field 'doc_id': empty id"),
    ("3\tagain", 5, "duplicate document id '3' (first at line 4)"),
])
def test_collection_errors_name_the_line(tmp_path, write_lines, bad, line, problem):
    lines = _plain_lines(2) + ["", "3\tthree", bad] + _plain_lines(300)[10:]  # bad is line 5, in block 1 or 2
    p = write_lines(tmp_path / "collection.tsv", lines)
    with pytest.raises(DataFormatError) as e:
        msmarco.write_collection_parquet(p, tmp_path / "c.parquet", row_group_rows=64, block_size=256)
    assert str(e.value) == f"{p}:{line}: {problem}"


def test_collection_invalid_utf8_names_the_line(tmp_path):
    p = tmp_path / "collection.tsv"
    p.write_bytes(b"".join(f"{i}\tok {i}\n".encode() for i in range(50)) + b"50\tbad \xff byte\n")
    with pytest.raises(DataFormatError, match=r"collection\.tsv:51: not valid UTF-8"):
        msmarco.write_collection_parquet(p, tmp_path / "c.parquet", row_group_rows=64, block_size=128)


def test_qrels_fast_path_equals_line_reader_and_falls_back(tmp_path, write_lines):
    p = write_lines(tmp_path / "qrels.train.tsv", [f"{i}\t0\t{i * 3}\t1" for i in range(20)])
    assert msmarco.read_qrels_frame(p).values.tolist() == trec.read_trec_qrels(p).values.tolist()
    spaced = write_lines(tmp_path / "qrels.dev.txt", ["1 0 5 1", "2 0 6 2.0"])
    assert msmarco.read_qrels_frame(spaced).values.tolist() == [["1", "5", 1], ["2", "6", 2]]
    dup = write_lines(tmp_path / "qrels.x.tsv", ["1\t0\t5\t1", "2\t0\t5\t1", "1\t0\t5\t2"])
    with pytest.raises(DataFormatError, match=r"qrels\.x\.tsv:3: duplicate judgement"):
        msmarco.read_qrels_frame(dup)


def _marco(make_msmarco):
    train = [(str(100 + i), f"train question {i}") for i in range(8)]
    dev = [(str(200 + i), f"dev question {i}") for i in range(6)]
    return make_msmarco(queries={"train": train, "dev": dev, "dev.small": dev[1:3], "eval": [("300", "e")],
                                 "eval.small": [("300", "e")]},
                        qrels={"train": [(str(100 + i), str(i), 1) for i in range(8)],
                               "dev.small": [("201", "8", 1), ("202", "9", 1)]})


def test_dev_small_beside_dev_is_read_once(make_msmarco, tmp_path):
    """MS MARCO's real layout: queries.dev.small.tsv is a subset of queries.dev.tsv, qrels only for dev.small."""
    root = _marco(make_msmarco)
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.manifest["counts"]["queries"] == 8 + 6 + 1
    assert ds.splits == ["dev", "train"]
    assert ds.queries("dev")[QUERY_ID].tolist() == ["201", "202"]
    assert ds.queries()[QUERY_ID].is_unique


def test_same_query_id_with_other_text_names_both_files(make_msmarco, tmp_path):
    root = _marco(make_msmarco)
    (root / "queries.dev.small.tsv").write_text("201\tdev question 1\n202\ta different text\n")
    with pytest.raises(DataFormatError) as e:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert str(e.value) == (f"{root / 'queries.dev.tsv'}:3: query id '202' appears in more than one queries.*.tsv "
                            f"file with different text (first at {root / 'queries.dev.small.tsv'}:2)")


def test_arrow_block_strips_padded_texts_itself():
    table = msmarco._parse_arrow("1\t  two sides  \n2\t\u00a0nbsp\n3\tclean\n".encode())
    assert table is not None  # ids are clean: no fallback to the line rules
    assert table["text"].to_pylist() == ["two sides", "nbsp", "clean"]
    assert msmarco._parse_arrow(b" 1\tpadded id\n") is None
