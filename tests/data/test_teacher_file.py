"""The streaming teacher-file reader: same table as the line-by-line reader, and one-line errors at the exact line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tasb_ray.data import teacher_file, trec
from tasb_ray.errors import DataFormatError
from tasb_ray.schema import PAIRS_COLUMNS


def _old_reader(path) -> pd.DataFrame:
    """The reader before the Arrow rewrite (kept here as the reference behaviour)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("\t")]
            assert len(parts) == 5
            rows.append((parts[2], parts[3], parts[4], float(parts[0]), float(parts[1])))
    return pd.DataFrame(rows, columns=list(PAIRS_COLUMNS))


def _write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


def _plain_lines(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    pos = rng.normal(8, 2, n).round(4)
    neg = rng.normal(2, 3, n).round(4)
    return [f"{p}\t{q}\t{1000 + i // 7}\t{rng.integers(10**6)}\t{rng.integers(10**6)}" for i, (p, q) in
            enumerate(zip(pos, neg))]


def _error(path, **kw) -> DataFormatError:
    with pytest.raises(DataFormatError) as exc:
        teacher_file.read_teacher_table(path, **kw)
    return exc.value


def test_same_table_as_old_reader_on_mixed_blocks(tmp_path):
    # Plain blocks take the Arrow path; the odd lines below force the line rules in their blocks.
    lines = _plain_lines(300)
    lines[10] = " 1.5\t0.25 \t q7\tp 1\tn1 "  # padding is stripped, inner spaces kept
    lines[50] = ""
    lines[51] = "   "
    lines[120] = "1_0\t2\tq\u00e9\t\u00fcp\tn"  # Python float syntax and non-ASCII ids
    lines[200] = "4\t-0\t\"q\"\tp'\tn"  # quotes are ordinary characters
    p = _write_bytes(tmp_path / "t.tsv", ("\r\n".join(lines[:150]) + "\n" + "\n".join(lines[150:])).encode())
    want = _old_reader(p)
    for block_size in (5, 97, 1000, 1 << 20):
        got = teacher_file.read_teacher_table(p, block_size=block_size)
        assert got.schema == teacher_file.PAIRS_SCHEMA
        pd.testing.assert_frame_equal(got.to_pandas(), want)
    pd.testing.assert_frame_equal(teacher_file.read_teacher_tsv(p), want)
    assert teacher_file.read_teacher_tsv(p).loc[10, ["qid", "pos_pid", "pos_score"]].tolist() == ["q7", "p 1", 1.5]


def test_plain_file_never_takes_the_line_rules(tmp_path, monkeypatch):
    p = _write_bytes(tmp_path / "t.tsv", ("\n".join(_plain_lines(500)) + "\n").encode())

    def fail(*a):
        raise AssertionError("plain block parsed line by line")

    monkeypatch.setattr(teacher_file, "_parse_lines", fail)
    batches = list(teacher_file.iter_teacher_batches(p, block_size=2000))
    assert len(batches) > 3 and all(isinstance(b, pa.RecordBatch) for b in batches)
    assert sum(b.num_rows for b in batches) == 500


def test_scores_and_ids_exact(tmp_path):
    p = _write_bytes(tmp_path / "t.tsv", b"12.5\t-3.25\t1001\t55\t66\n0.1\t4.000001\t1002\t8\t9")  # no final newline
    t = teacher_file.read_teacher_table(p)
    assert t.column("qid").to_pylist() == ["1001", "1002"]
    assert t.column("neg_pid").to_pylist() == ["66", "9"]
    assert t.column("pos_score").to_pylist() == [12.5, 0.1]
    assert t.column("neg_score").to_pylist() == [-3.25, 4.000001]


@pytest.mark.parametrize("block_size", [8, 64, 1 << 20])
@pytest.mark.parametrize("bad,field,problem", [
    ("1.5\t0.5\t7\t8", None, "expected 5 tab-separated columns, got 4"),
    ("1.5\t0.5\t7\t8\t9\t10", None, "expected 5 tab-separated columns, got 6"),
    ("high\t0.5\t7\t8\t9", "pos_score", "not a number: 'high'"),
    ("1.5\t\t7\t8\t9", "neg_score", "not a number: ''"),
    ("1.5\t0.5\t\t8\t9", "qid", "empty id"),
    ("1.5\t0.5\t7\t \t9", "pos_pid", "empty id"),
    ("1.5\t0.5\t7\t8\t", "neg_pid", "empty id"),
    ("nan\t0.5\t7\t8\t9", "pos_score", "not a finite number: 'nan'"),
    ("1.5\tNaN\t7\t8\t9", "neg_score", "not a finite number: 'NaN'"),
    ("inf\t0.5\t7\t8\t9", "pos_score", "not a finite number: 'inf'"),
    ("1.5\t-inf\t7\t8\t9", "neg_score", "not a finite number: '-inf'"),
    ("1e999\t0.5\t7\t8\t9", "pos_score", "not a finite number: '1e999'"),
])
def test_bad_line_named_exactly(tmp_path, block_size, bad, field, problem):
    lines = _plain_lines(40)
    lines[5] = ""  # blank lines count towards the line number
    lines[17] = ""
    lines[31] = bad
    p = _write_bytes(tmp_path / "t.tsv", ("\n".join(lines) + "\n").encode())
    err = _error(p, block_size=block_size)
    where = f"{p}:32: " + (f"field '{field}': " if field else "")
    assert str(err) == where + problem
    assert (err.path, err.line, err.field) == (str(p), 32, field)


def test_nan_in_the_last_line_without_newline(tmp_path):
    p = _write_bytes(tmp_path / "t.tsv", ("\n".join(_plain_lines(10)) + "\n1\tnan\t1\t2\t3").encode())
    assert str(_error(p)) == f"{p}:11: field 'neg_score': not a finite number: 'nan'"


@pytest.mark.parametrize("block_size", [50, 1 << 20])
def test_not_utf8_named_exactly(tmp_path, block_size):
    lines = [s.encode() for s in _plain_lines(20)]
    lines[3] = b""
    lines[12] = b"1.5\t0.5\t7\t8\xff9\t10"
    p = _write_bytes(tmp_path / "t.tsv", b"\n".join(lines) + b"\n")
    err = _error(p, block_size=block_size)
    assert err.line == 13
    assert str(err) == f"{p}:13: not valid UTF-8 (byte 0xff at column 12)"


def test_lone_carriage_returns_are_line_breaks(tmp_path):
    # Universal newlines (as the line-by-line reader had): a lone \r ends a line, so the bad line is line 3.
    p = _write_bytes(tmp_path / "t.tsv", b"1\t2\t3\t4\t5\r1\t2\t3\t4\t5\r\n1\t2\t3\t4\n")
    assert _error(p).line == 3
    ok = _write_bytes(tmp_path / "ok.tsv", b"1\t2\t3\t4\t5\r1\t2\t3\t4\t6\r\n")
    assert teacher_file.read_teacher_table(ok).column("neg_pid").to_pylist() == ["5", "6"]


def test_empty_and_blank_files(tmp_path):
    for data in (b"", b"\n\n  \n"):
        p = _write_bytes(tmp_path / "t.tsv", data)
        err = _error(p)
        assert str(err) == f"{p}: no teacher scores in file"


def test_batches_stream_before_a_late_error(tmp_path):
    lines = _plain_lines(200) + ["x\t1\t2\t3\t4"]
    p = _write_bytes(tmp_path / "t.tsv", ("\n".join(lines) + "\n").encode())
    it = teacher_file.iter_teacher_batches(p, block_size=1000)
    first = next(it)
    assert first.num_rows > 0 and first.schema == teacher_file.PAIRS_SCHEMA
    with pytest.raises(DataFormatError, match=r":201: field 'pos_score': not a number: 'x'$"):
        list(it)


def test_round_trip_of_written_file_is_finite(tmp_path):
    pairs = pd.DataFrame({"qid": ["1", "2"], "pos_pid": ["3", "4"], "neg_pid": ["5", "6"],
                          "pos_score": [1.0, math.pi], "neg_score": [-0.5, 2.0]})
    teacher_file.write_teacher_tsv(pairs, tmp_path / "t.tsv")
    got = teacher_file.read_teacher_tsv(tmp_path / "t.tsv")
    pd.testing.assert_frame_equal(got, pairs.assign(pos_score=[1.0, 3.141593]))


def test_other_line_readers_report_bad_utf8_in_one_line(tmp_path):
    p = _write_bytes(tmp_path / "collection.tsv", b"1\tone\n\n2\ttw\xc3o\n")
    with pytest.raises(DataFormatError) as exc:
        trec.read_collection_tsv(p)
    assert str(exc.value) == f"{p}:3: not valid UTF-8 (byte 0xc3 at column 5)"
