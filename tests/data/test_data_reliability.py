"""Data-layer reliability: a content-keyed cache, one-line errors for bytes and permissions, confined cache
paths, MS MARCO split names, and a visible count of training queries dropped for being test queries."""

from __future__ import annotations

import os

import pytest
from unreadable import deny_reads

from tasb_ray.data.beir import read_corpus_jsonl, read_queries_jsonl
from tasb_ray.data.prepare import prepare_dataset
from tasb_ray.data.trec import read_trec_qrels
from tasb_ray.errors import DataFormatError, TasbRayError
from tasb_ray.schema import TEXT


def test_edit_with_same_size_and_restored_mtime_rebuilds(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    prepare_dataset(str(root), cache_dir=cache)
    path = root / "corpus.jsonl"
    st = path.stat()
    path.write_text(path.read_text().replace("passage number 5", "passage NUMBER 5"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what touch -r / cp -p / an old checkout leave
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    logs: list[str] = []
    second = prepare_dataset(str(root), cache_dir=cache, log=logs.append)
    assert "passage NUMBER 5" in set(second.corpus()[TEXT])
    assert any(f"source {path.resolve()} changed: sha256 differs" in s for s in logs), logs
    logs.clear()
    prepare_dataset(str(root), cache_dir=cache, log=logs.append)
    assert any(s.startswith("cache hit") for s in logs)


@pytest.mark.parametrize("name, reader", [("corpus.jsonl", read_corpus_jsonl), ("queries.jsonl", read_queries_jsonl)])
def test_non_utf8_byte_names_file_line_and_column(tmp_path, name, reader):
    path = tmp_path / name
    path.write_bytes(b'{"_id": "a", "text": "fine"}\n' + b'{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataFormatError) as e:
        reader(path)
    assert str(e.value) == f"{path}:2: not valid UTF-8 (byte 0xe9 at column 26)"


def test_non_utf8_byte_deep_in_a_large_file(tmp_path):
    # Past the text reader's first buffer, so the line number cannot come from the decoder's offset.
    path = tmp_path / "qrels.txt"
    path.write_bytes(b"".join(b"q%d 0 d%d 1\n" % (i, i) for i in range(20000)) + b"q\xff 0 d1 1\n")
    with pytest.raises(DataFormatError) as e:
        read_trec_qrels(path)
    assert str(e.value) == f"{path}:20001: not valid UTF-8 (byte 0xff at column 2)"


def test_unreadable_file_is_permission_denied(make_beir, tmp_path, monkeypatch):
    root = make_beir()
    deny_reads(root / "queries.jsonl", monkeypatch)
    with pytest.raises(DataFormatError) as e:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert str(e.value) == f"{root.resolve() / 'queries.jsonl'}: permission denied"


def test_unreadable_file_when_checking_a_cache(make_beir, tmp_path, monkeypatch):
    root = make_beir()
    prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    deny_reads(root / "corpus.jsonl", monkeypatch)
    with pytest.raises(DataFormatError, match="corpus.jsonl: permission denied"):
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")


def test_search_path_name_cannot_put_the_cache_outside(make_beir, tmp_path, monkeypatch):
    make_beir(name="base", root=tmp_path / "search")
    (tmp_path / "search" / "inner").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # '../base' is no directory from here
    monkeypatch.setenv("TASB_RAY_DATA", str(tmp_path / "search" / "inner"))
    cache = tmp_path / "cache"
    with pytest.raises(TasbRayError) as e:
        prepare_dataset("../base", cache_dir=cache)
    assert "'../base'" in str(e.value) and "\n" not in str(e.value)
    assert not cache.exists() or [p.name for p in cache.iterdir()] in ([], ["datasets"])


def test_msmarco_qrels_without_split_name_is_refused(make_msmarco, tmp_path):
    root = make_msmarco()
    (root / "qrels.train.tsv").rename(root / "qrels.tsv")
    with pytest.raises(DataFormatError) as e:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert str(e.value).startswith(f"{root.resolve() / 'qrels.tsv'}: cannot tell the split from the name")


def test_msmarco_small_suffix_keeps_split(make_msmarco, tmp_path):
    root = make_msmarco()
    (root / "qrels.dev.tsv").rename(root / "qrels.dev.small.tsv")
    assert prepare_dataset(str(root), cache_dir=tmp_path / "cache").splits == ["dev", "train"]


def test_training_queries_in_test_are_counted_not_silently_dropped(make_beir, tmp_path):
    rows = [(f"q{i}", f"d{i}", 1) for i in range(10)]
    root = make_beir(qrels={"train": rows, "test": [("q0", "d5", 1), ("q1", "d6", 1), ("t0", "d7", 1)]})
    logs: list[str] = []
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache", log=logs.append)
    assert ds.manifest["dropped"] == {"train_queries_also_in_test": 2}
    assert any(s.startswith("warning:") and "2 training queries are also in 'test'" in s for s in logs), logs
