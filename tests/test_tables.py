"""tasb_ray.tables.read_columns: a Parquet file's columns row group by row group, the same table as one read."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tasb_ray.tables import read_columns


def test_read_columns_equals_one_read_in_the_asked_order(tmp_path):
    table = pa.table({"doc_id": [str(i) for i in range(1000)], "text": [f"passage {i} " * (i % 7) for i in range(1000)],
                      "row": list(range(1000))})
    pq.write_table(table, tmp_path / "c.parquet", row_group_size=128)
    assert pq.ParquetFile(tmp_path / "c.parquet").num_row_groups == 8
    got = read_columns(tmp_path / "c.parquet", ["text", "doc_id"])
    assert got.column_names == ["text", "doc_id"] and got["text"].num_chunks == 8
    assert got.equals(pq.read_table(tmp_path / "c.parquet", columns=["text", "doc_id"]))


def test_read_columns_of_an_empty_file(tmp_path):
    pq.write_table(pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   tmp_path / "e.parquet")
    got = read_columns(tmp_path / "e.parquet", ["text"])
    assert got.num_rows == 0 and got.column_names == ["text"]
