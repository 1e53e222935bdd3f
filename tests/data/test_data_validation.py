"""Every validation error names the file and the line (or the field) at fault."""

from __future__ import annotations

import json

import pytest

from tasb_ray.data import beir, teacher_file, trec
from tasb_ray.data.prepare import prepare_dataset
from tasb_ray.errors import DataFormatError, TasbRayError


def _raises(fn, *args) -> DataFormatError:
    with pytest.raises(DataFormatError) as exc:
        fn(*args)
    return exc.value


def _assert_where(err: DataFormatError, path, line: int | None = None, field: str | None = None) -> str:
    msg = str(err)
    assert str(path) in msg, msg
    assert err.path == str(path)
    if line is not None:
        assert err.line == line
        assert f"{path}:{line}:" in msg, msg
    if field is not None:
        assert err.field == field
        assert f"field '{field}'" in msg, msg
    return msg


# --- malformed JSON -----------------------------------------------------------------------------


def test_corpus_malformed_json_line(tmp_path, write_lines):
    p = write_lines(tmp_path / "corpus.jsonl", [
        json.dumps({"_id": "d1", "text": "a"}),
        "",  # blank lines are skipped but still counted
        '{"_id": "d2", "text": "b"',
    ])
    msg = _assert_where(_raises(beir.read_corpus_jsonl, p), p, line=3)
    assert "invalid JSON" in msg


def test_queries_malformed_json_line(tmp_path, write_lines):
    p = write_lines(tmp_path / "queries.jsonl", [
        json.dumps({"_id": "q1", "text": "a"}),
        "{not json at all}",
    ])
    msg = _assert_where(_raises(beir.read_queries_jsonl, p), p, line=2)
    assert "invalid JSON" in msg


def test_jsonl_line_not_an_object(tmp_path, write_lines):
    p = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"_id": "d1", "text": "a"}), "[1, 2]"])
    msg = _assert_where(_raises(beir.read_corpus_jsonl, p), p, line=2)
    assert "JSON object" in msg


# --- missing required fields --------------------------------------------------------------------


@pytest.mark.parametrize("reader,name", [(beir.read_corpus_jsonl, "corpus.jsonl"),
                                         (beir.read_queries_jsonl, "queries.jsonl")])
def test_missing_id_field(tmp_path, write_lines, reader, name):
    p = write_lines(tmp_path / name, [json.dumps({"_id": "x1", "text": "a"}), json.dumps({"text": "no id"})])
    msg = _assert_where(_raises(reader, p), p, line=2, field="_id")
    assert "missing required field" in msg


@pytest.mark.parametrize("reader,name", [(beir.read_corpus_jsonl, "corpus.jsonl"),
                                         (beir.read_queries_jsonl, "queries.jsonl")])
def test_missing_text_field(tmp_path, write_lines, reader, name):
    p = write_lines(tmp_path / name, [json.dumps({"_id": "x1", "text": "a"}),
                                      json.dumps({"_id": "x2", "title": "only a title"})])
    msg = _assert_where(_raises(reader, p), p, line=2, field="text")
    assert "missing required field" in msg


def test_empty_id_and_wrong_id_type(tmp_path, write_lines):
    p = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"_id": "  ", "text": "a"})])
    _assert_where(_raises(beir.read_corpus_jsonl, p), p, line=1, field="_id")
    p = write_lines(tmp_path / "corpus2.jsonl", [json.dumps({"_id": ["d1"], "text": "a"})])
    _assert_where(_raises(beir.read_corpus_jsonl, p), p, line=1, field="_id")


# --- duplicates ---------------------------------------------------------------------------------


def test_duplicate_corpus_id(tmp_path, write_lines):
    p = write_lines(tmp_path / "corpus.jsonl", [json.dumps({"_id": "d1", "text": "a"}),
                                                json.dumps({"_id": "d2", "text": "b"}),
                                                json.dumps({"_id": "d1", "text": "c"})])
    msg = _assert_where(_raises(beir.read_corpus_jsonl, p), p, line=3)
    assert "duplicate" in msg and "'d1'" in msg and "first at line 1" in msg


def test_duplicate_query_id(tmp_path, write_lines):
    # An integer id and its string form are the same id.
    p = write_lines(tmp_path / "queries.jsonl", [json.dumps({"_id": 7, "text": "a"}),
                                                 json.dumps({"_id": "7", "text": "b"})])
    msg = _assert_where(_raises(beir.read_queries_jsonl, p), p, line=2)
    assert "duplicate" in msg and "first at line 1" in msg


def test_duplicate_qrels_judgement(tmp_path, write_lines):
    p = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q1\td2\t1", "q1\td1\t2"])
    msg = _assert_where(_raises(beir.read_qrels_tsv, p), p, line=4)
    assert "duplicate" in msg and "first at line 2" in msg


def test_duplicate_collection_pid(tmp_path, write_lines):
    p = write_lines(tmp_path / "collection.tsv", ["1\tone", "2\ttwo", "1\tagain"])
    _assert_where(_raises(trec.read_collection_tsv, p), p, line=3)


def test_duplicate_trec_qrels_judgement(tmp_path, write_lines):
    p = write_lines(tmp_path / "qrels.dev.tsv", ["1 0 10 1", "1 0 10 1"])
    _assert_where(_raises(trec.read_trec_qrels, p), p, line=2)


# --- references (through prepare_dataset) -------------------------------------------------------


def test_qrels_unknown_query(make_beir, tmp_path):
    root = make_beir(qrels={"test": [("t0", "d1", 1), ("t1", "d2", 1), ("nosuchq", "d3", 1)]})
    qrels = root / "qrels" / "test.tsv"
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    msg = _assert_where(exc.value, qrels, line=4)
    assert "unknown query id 'nosuchq'" in msg


def test_qrels_unknown_document(make_beir, tmp_path):
    root = make_beir(qrels={"test": [("t0", "d1", 1), ("t1", "nosuchdoc", 1), ("t2", "d3", 1)]})
    qrels = root / "qrels" / "test.tsv"
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    msg = _assert_where(exc.value, qrels, line=3)
    assert "unknown document id 'nosuchdoc'" in msg
    assert not (tmp_path / "cache" / "datasets").exists() or not any((tmp_path / "cache" / "datasets").iterdir())


def test_qrels_unknown_document_numeric_ids_reports_right_line(make_msmarco, tmp_path):
    # MS MARCO ids are all numbers: the reported line must be the offending row, not an earlier
    # line that merely contains the same tokens in other columns (here "5 0 3 1" holds both "5" and "1").
    root = make_msmarco(
        collection=[(str(i), f"p{i}") for i in range(5)],
        queries={"train": [("1", "a"), ("5", "b")], "dev": [("9", "c")]},
        qrels={"train": ["5 0 3 1", "1 0 5 1"], "dev": ["9 0 2 1"]},
    )
    qrels = root / "qrels.train.tsv"
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    msg = _assert_where(exc.value, qrels, line=2)
    assert "unknown document id '5'" in msg


def test_empty_split_header_only(make_beir, tmp_path):
    root = make_beir(qrels={"test": []})  # the builder still writes the header line
    qrels = root / "qrels" / "test.tsv"
    assert qrels.read_text().strip() == "query-id\tcorpus-id\tscore"
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    msg = _assert_where(exc.value, qrels)
    assert "empty split" in msg


def test_no_qrels_at_all(make_beir, tmp_path):
    root = make_beir(qrels={})
    with pytest.raises(TasbRayError, match="no qrels"):
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")


# --- column counts ------------------------------------------------------------------------------


def test_beir_qrels_wrong_column_count(tmp_path, write_lines):
    p = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2"])
    msg = _assert_where(_raises(beir.read_qrels_tsv, p), p, line=3)
    assert "expected 3 tab-separated columns, got 2" in msg


def test_collection_tsv_wrong_column_count(tmp_path, write_lines):
    p = write_lines(tmp_path / "collection.tsv", ["1\tone", "2\ttwo\textra"])
    msg = _assert_where(_raises(trec.read_collection_tsv, p), p, line=2)
    assert "expected 2 tab-separated columns, got 3" in msg


def test_teacher_file_wrong_column_count(tmp_path, write_lines):
    p = write_lines(tmp_path / "teacher.tsv", ["1.5\t0.5\tq1\tp1\tn1", "1.5\t0.5\tq1\tp1"])
    msg = _assert_where(_raises(teacher_file.read_teacher_tsv, p), p, line=2)
    assert "expected 5 tab-separated columns, got 4" in msg


def test_trec_qrels_wrong_column_count(tmp_path, write_lines):
    p = write_lines(tmp_path / "qrels.dev.txt", ["1 0 10 1", "2 0 11"])
    msg = _assert_where(_raises(trec.read_trec_qrels, p), p, line=2)
    assert "whitespace-separated" in msg


# --- numbers ------------------------------------------------------------------------------------


def test_beir_qrels_non_numeric_score(tmp_path, write_lines):
    p = write_lines(tmp_path / "test.tsv", ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td2\thigh"])
    msg = _assert_where(_raises(beir.read_qrels_tsv, p), p, line=3, field="score")
    assert "'high'" in msg


def test_trec_qrels_non_numeric_grade(tmp_path, write_lines):
    p = write_lines(tmp_path / "qrels.train.tsv", ["1\t0\t10\t1", "2\t0\t11\trelevant"])
    msg = _assert_where(_raises(trec.read_trec_qrels, p), p, line=2, field="grade")
    assert "'relevant'" in msg


@pytest.mark.parametrize("line,field", [("abc\t0.5\tq1\tp1\tn2", "pos_score"), ("1.0\tnan?\tq1\tp1\tn2", "neg_score")])
def test_teacher_non_numeric_score(tmp_path, write_lines, line, field):
    p = write_lines(tmp_path / "teacher.tsv", ["1.5\t0.5\tq1\tp1\tn1", line])
    _assert_where(_raises(teacher_file.read_teacher_tsv, p), p, line=2, field=field)


def test_teacher_empty_id(tmp_path, write_lines):
    p = write_lines(tmp_path / "teacher.tsv", ["1.5\t0.5\tq1\t\tn1"])
    _assert_where(_raises(teacher_file.read_teacher_tsv, p), p, line=1, field="pos_pid")


def test_trec_run_non_numeric_score(tmp_path, write_lines):
    p = write_lines(tmp_path / "run.txt", ["1 Q0 10 1 3.5 tag", "1 Q0 11 2 x tag"])
    _assert_where(_raises(trec.read_trec_run, p), p, line=2, field="score")


# --- missing files ------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", [beir.read_corpus_jsonl, beir.read_queries_jsonl, beir.read_qrels_tsv,
                                    trec.read_collection_tsv, trec.read_queries_tsv, trec.read_trec_qrels,
                                    trec.read_trec_run, teacher_file.read_teacher_tsv])
def test_missing_file(tmp_path, reader):
    p = tmp_path / "does-not-exist.txt"
    msg = _assert_where(_raises(reader, p), p)
    assert "file not found" in msg


def test_msmarco_dir_without_queries_file(make_msmarco, tmp_path):
    root = make_msmarco(queries={})
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    msg = _assert_where(exc.value, root)
    assert "queries" in msg
