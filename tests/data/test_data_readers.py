"""Reader behaviour: passage text, query metadata never read, TREC run and teacher-file round trips."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tasb_ray.data import beir, teacher_file, trec
from tasb_ray.data.prepare import prepare_dataset
from tasb_ray.schema import DOC_ID, PAIRS_COLUMNS, QUERY_ID, SCORE, TEXT


def test_passage_text_title_plus_text(tmp_path, write_lines):
    p = write_lines(tmp_path / "corpus.jsonl", [
        json.dumps({"_id": "d1", "title": "Aspirin", "text": "reduces fever."}),
        json.dumps({"_id": "d2", "title": "", "text": "no title here"}),
        json.dumps({"_id": "d3", "text": "title key absent"}),
        json.dumps({"_id": "d4", "title": None, "text": "null title"}),
        json.dumps({"_id": "d5", "title": "   ", "text": "blank title"}),
        json.dumps({"_id": 6, "title": "Int id", "text": "x"}),
    ])
    df = beir.read_corpus_jsonl(p)
    assert list(df.columns) == [DOC_ID, TEXT]
    assert dict(zip(df[DOC_ID], df[TEXT])) == {
        "d1": "Aspirin reduces fever.",
        "d2": "no title here",
        "d3": "title key absent",
        "d4": "null title",
        "d5": "blank title",
        "6": "Int id x",
    }


def test_query_metadata_never_read(tmp_path, write_lines):
    huge = {"answers": ["d%d" % i for i in range(50_000)], "blob": "x" * 2_000_000}
    p = write_lines(tmp_path / "queries.jsonl", [
        json.dumps({"_id": "q1", "text": "what is aspirin", "metadata": huge}),
        json.dumps({"_id": "q2", "text": "second", "metadata": "not-a-dict"}),
        json.dumps({"_id": "q3", "text": "third", "metadata": [1, None, {"a": []}]}),
        json.dumps({"_id": "q4", "text": "fourth", "metadata": None}),
        json.dumps({"_id": "q5", "text": " padded  "}),
    ])
    df = beir.read_queries_jsonl(p)
    assert list(df.columns) == [QUERY_ID, TEXT]
    assert df[QUERY_ID].tolist() == ["q1", "q2", "q3", "q4", "q5"]
    assert df[TEXT].tolist() == ["what is aspirin", "second", "third", "fourth", "padded"]


def test_prepared_queries_have_no_metadata(make_beir, tmp_path):
    root = make_beir()
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    q = pd.read_parquet(ds.root / "queries.parquet")
    assert list(q.columns) == [QUERY_ID, TEXT]
    import pyarrow.parquet as pq

    assert pq.read_schema(ds.root / "queries.parquet").names == [QUERY_ID, TEXT]
    assert b"answer" not in (ds.root / "queries.parquet").read_bytes()
    corpus = ds.corpus().set_index(DOC_ID)[TEXT]
    assert corpus["d0"] == "Title 0 passage number 0"
    assert corpus["d1"] == "passage number 1"


def test_beir_qrels_header_optional_and_float_integers(tmp_path, write_lines):
    p = write_lines(tmp_path / "a.tsv", ["q1\td1\t1", "q2\td2\t2.0"])
    df = beir.read_qrels_tsv(p)
    assert df.values.tolist() == [["q1", "d1", 1], ["q2", "d2", 2]]


def test_trec_run_round_trip(tmp_path):
    run = pd.DataFrame({
        QUERY_ID: ["q2", "q1", "q1", "q2", "q1", "q2"],
        DOC_ID: ["a", "x", "y", "b", "z", "c"],
        SCORE: [0.5, -1.25, 7.123456, 3.0, 7.123456, 0.5],
    })
    path = tmp_path / "out" / "run.trec"
    trec.write_trec_run(run, path, tag="mytag")
    lines = path.read_text().splitlines()
    # Ranked by score descending within each query, ties broken by doc id; ranks start at 1.
    assert lines == [
        "q1 Q0 y 1 7.123456 mytag",
        "q1 Q0 z 2 7.123456 mytag",
        "q1 Q0 x 3 -1.250000 mytag",
        "q2 Q0 b 1 3.000000 mytag",
        "q2 Q0 a 2 0.500000 mytag",
        "q2 Q0 c 3 0.500000 mytag",
    ]
    back = trec.read_trec_run(path)
    expected = trec.sort_run(run)
    assert back[[QUERY_ID, DOC_ID]].values.tolist() == expected[[QUERY_ID, DOC_ID]].values.tolist()
    assert back[SCORE].tolist() == pytest.approx(expected[SCORE].tolist(), abs=1e-6)
    # Writing what was read gives the same file.
    trec.write_trec_run(back, tmp_path / "again.trec", tag="mytag")
    assert (tmp_path / "again.trec").read_text() == path.read_text()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_trec_run_empty(tmp_path):
    path = tmp_path / "empty.trec"
    trec.write_trec_run(pd.DataFrame({QUERY_ID: [], DOC_ID: [], SCORE: []}), path)
    assert path.read_text() == ""
    assert trec.read_trec_run(path).empty


def test_teacher_tsv_round_trip(tmp_path, write_lines):
    src = write_lines(tmp_path / "teacher.tsv", [
        "12.5\t-3.25\t1001\t55\t66",
        "",
        "0.125\t0.5\t1001\t55\t77",
        "4\t4.000001\t1002\t8\t9",
    ])
    first = teacher_file.read_teacher_tsv(src)
    assert list(first.columns) == list(PAIRS_COLUMNS)
    assert first[["qid", "pos_pid", "neg_pid"]].values.tolist() == [["1001", "55", "66"], ["1001", "55", "77"],
                                                                     ["1002", "8", "9"]]
    assert first["pos_score"].tolist() == [12.5, 0.125, 4.0]
    assert first["neg_score"].tolist() == [-3.25, 0.5, 4.000001]
    out = tmp_path / "exported.tsv"
    teacher_file.write_teacher_tsv(first, out)
    assert out.read_text().splitlines()[0].split("\t")[2:] == ["1001", "55", "66"]
    second = teacher_file.read_teacher_tsv(out)
    pd.testing.assert_frame_equal(first, second)


def test_teacher_tsv_empty_file(tmp_path, write_lines):
    from tasb_ray.errors import DataFormatError

    p = write_lines(tmp_path / "teacher.tsv", [])
    with pytest.raises(DataFormatError, match=str(p)):
        teacher_file.read_teacher_tsv(p)


def test_write_teacher_tsv_requires_columns(tmp_path):
    with pytest.raises(ValueError, match="lacks columns"):
        teacher_file.write_teacher_tsv(pd.DataFrame({"qid": ["1"]}), tmp_path / "t.tsv")
