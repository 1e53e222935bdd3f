"""prepare_dataset: dev carving, manifest, cache hits and rebuilds, atomic publication, MS MARCO dirs."""

from __future__ import annotations

import os

import pandas as pd
import pytest

import tasb_ray.data.prepare as prepare_mod
from tasb_ray.data.prepare import MANIFEST, PreparedDataset, PrepareOptions, prepare_dataset
from tasb_ray.data.splits import carve_dev
from tasb_ray.errors import TasbRayError
from tasb_ray.fileio import sha256_file
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, TEXT


def _qids(ds: PreparedDataset, split: str) -> set[str]:
    return set(ds.qrels(split)[QUERY_ID])


def _original_qids(root, split: str) -> set[str]:
    lines = (root / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
    return {line.split("\t")[0] for line in lines if line.strip()}


# --- dev carving --------------------------------------------------------------------------------


def test_dev_carved_deterministically_by_seed(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    a = prepare_dataset(str(root), cache_dir=cache, options=PrepareOptions(dev_fraction=0.25, dev_seed=1))
    b = prepare_dataset(str(root), cache_dir=tmp_path / "cache2", options=PrepareOptions(dev_fraction=0.25, dev_seed=1))
    c = prepare_dataset(str(root), cache_dir=cache, options=PrepareOptions(dev_fraction=0.25, dev_seed=2))
    assert a.splits == ["dev", "test", "train"]
    assert len(_qids(a, "dev")) == 5  # 25% of 20 training queries
    assert _qids(a, "dev") == _qids(b, "dev")
    assert _qids(a, "dev") != _qids(c, "dev")
    assert a.root != c.root  # options are part of the cache key


def test_dev_disjoint_and_partitions_original_train(make_beir, tmp_path):
    root = make_beir()
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache", options=PrepareOptions(dev_fraction=0.3, dev_seed=7))
    train, dev, test = _qids(ds, "train"), _qids(ds, "dev"), _qids(ds, "test")
    assert dev and train
    assert train.isdisjoint(dev) and dev.isdisjoint(test) and train.isdisjoint(test)
    assert train | dev == _original_qids(root, "train")
    assert test == _original_qids(root, "test")
    # Carving is by query: every judgement of a query lands on the same side, none lost.
    original = pd.read_csv(root / "qrels" / "train.tsv", sep="\t", dtype=str)
    assert len(ds.qrels("train")) + len(ds.qrels("dev")) == len(original)
    assert list(ds.qrels("dev").columns) == [QUERY_ID, DOC_ID, RELEVANCE]
    assert ds.manifest["dev_carved_from"] == "train"
    assert set(ds.queries("dev")[QUERY_ID]) == dev


def test_dev_never_overlaps_test_even_if_train_does(make_beir, tmp_path):
    rows = [(f"q{i}", f"d{i}", 1) for i in range(10)]
    test_rows = [("q0", "d5", 1), ("q1", "d6", 1), ("t0", "d7", 1)]
    root = make_beir(qrels={"train": rows, "test": test_rows})
    for seed in range(5):
        ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache", options=PrepareOptions(0.5, seed))
        test = _qids(ds, "test")
        assert _qids(ds, "dev").isdisjoint(test)
        assert _qids(ds, "train").isdisjoint(test)


def test_carve_dev_ignores_file_order():
    df = pd.DataFrame({QUERY_ID: [f"q{i}" for i in range(30)], DOC_ID: "d", RELEVANCE: 1})
    _, dev1 = carve_dev(df, 0.2, 3)
    _, dev2 = carve_dev(df.iloc[::-1], 0.2, 3)
    assert set(dev1[QUERY_ID]) == set(dev2[QUERY_ID])
    with pytest.raises(ValueError):
        carve_dev(df, 1.0, 3)


def test_own_dev_split_is_not_carved(make_beir, tmp_path):
    qrels = {
        "train": [(f"q{i}", f"d{i}", 1) for i in range(12)],
        "dev": [(f"q{i}", f"d{i}", 1) for i in range(12, 16)],
        "test": [("t0", "d0", 1)],
    }
    root = make_beir(qrels=qrels)
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.manifest["dev_carved_from"] is None
    assert _qids(ds, "dev") == {f"q{i}" for i in range(12, 16)}
    assert _qids(ds, "train") == {f"q{i}" for i in range(12)}


def test_manifest_records_counts_hashes_options(make_beir, tmp_path):
    root = make_beir()
    opts = PrepareOptions(dev_fraction=0.2, dev_seed=5)
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache", options=opts)
    m = ds.manifest
    assert m == PreparedDataset.open(ds.root).manifest
    assert m["name"] == "tinybeir" and ds.name == "tinybeir"
    assert m["options"] == {"dev_fraction": 0.2, "dev_seed": 5}
    assert m["source"]["kind"] == "beir"
    files = m["source"]["files"]
    assert set(files) == {"corpus.jsonl", "queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"}
    for rel, info in files.items():
        assert info["sha256"] == sha256_file(root / rel)
        assert info["bytes"] == (root / rel).stat().st_size
    counts = m["counts"]
    assert counts["corpus"] == 30 and counts["queries"] == 24
    assert counts["splits"]["test"] == {"queries": 4, "qrels": 4}
    assert counts["splits"]["dev"]["queries"] == 4  # 20% of 20
    assert counts["splits"]["train"]["queries"] == 16
    assert counts["splits"]["train"]["qrels"] + counts["splits"]["dev"]["qrels"] == 27
    assert len(ds.corpus()) == 30 and list(ds.corpus().columns) == [DOC_ID, TEXT]
    assert len(ds.queries()) == 24 and len(ds.queries("test")) == 4
    assert m["created"]
    with pytest.raises(TasbRayError, match="no split 'nope'"):
        ds.qrels("nope")


# --- cache --------------------------------------------------------------------------------------


def test_second_prepare_is_cache_hit(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    first = prepare_dataset(str(root), cache_dir=cache)
    mf = first.root / MANIFEST
    stamp = (mf.stat().st_mtime_ns, (first.root / "corpus.parquet").stat().st_mtime_ns)
    logs: list[str] = []
    second = prepare_dataset(str(root), cache_dir=cache, log=logs.append)
    assert second.root == first.root
    assert second.manifest["created"] == first.manifest["created"]
    assert (mf.stat().st_mtime_ns, (first.root / "corpus.parquet").stat().st_mtime_ns) == stamp
    assert any("cache hit" in s for s in logs)
    # Touching a file without changing it is still a hit (content hash compared).
    os.utime(root / "corpus.jsonl", ns=(1_000_000_000, 1_000_000_000))
    third = prepare_dataset(str(root), cache_dir=cache)
    assert mf.stat().st_mtime_ns == stamp[0]
    assert third.manifest["created"] == first.manifest["created"]


def _corrupt_manifest_created(ds: PreparedDataset) -> None:
    """Mark the cached manifest so a rebuild is detectable without waiting for the clock."""
    import json

    mf = ds.root / MANIFEST
    m = json.loads(mf.read_text())
    m["created"] = "MARKER"
    mf.write_text(json.dumps(m))


def test_changed_source_triggers_rebuild(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    first = prepare_dataset(str(root), cache_dir=cache)
    _corrupt_manifest_created(first)
    with open(root / "corpus.jsonl", "a") as f:
        f.write('{"_id": "dnew", "text": "a new passage"}\n')
    logs: list[str] = []
    second = prepare_dataset(str(root), cache_dir=cache, log=logs.append)
    assert second.root == first.root
    assert second.manifest["created"] != "MARKER"
    assert second.manifest["counts"]["corpus"] == 31
    assert "dnew" in set(second.corpus()[DOC_ID])
    assert any("rebuilding" in s for s in logs)
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == [first.root.name]


def test_same_size_edit_triggers_rebuild(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    first = prepare_dataset(str(root), cache_dir=cache)
    _corrupt_manifest_created(first)
    path = root / "corpus.jsonl"
    text = path.read_text()
    path.write_text(text.replace("passage number 5", "passage NUMBER 5"))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    second = prepare_dataset(str(root), cache_dir=cache)
    assert second.manifest["created"] != "MARKER"
    assert "passage NUMBER 5" in set(second.corpus()[TEXT])


def test_new_split_file_triggers_rebuild(make_beir, tmp_path):
    root = make_beir()
    cache = tmp_path / "cache"
    first = prepare_dataset(str(root), cache_dir=cache)
    assert first.manifest["dev_carved_from"] == "train"
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")
    (root / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(1, 20)))
    second = prepare_dataset(str(root), cache_dir=cache)
    assert second.manifest["dev_carved_from"] is None
    assert _qids(second, "dev") == {"q0"}


def test_force_rebuilds(make_beir, tmp_path):
    root = make_beir()
    first = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    _corrupt_manifest_created(first)
    second = prepare_dataset(str(root), cache_dir=tmp_path / "cache", force=True)
    assert second.manifest["created"] != "MARKER"


def _assert_no_cache_left(cache):
    datasets = cache / "datasets"
    leftovers = list(datasets.rglob("*")) if datasets.exists() else []
    assert not [p for p in leftovers if p.name == MANIFEST], leftovers
    assert not [p for p in leftovers if not p.name.startswith(".")], leftovers
    assert leftovers == [], leftovers  # the temporary directory is cleaned up too


def test_interrupted_manifest_write_leaves_nothing(make_beir, tmp_path, monkeypatch):
    root = make_beir()
    cache = tmp_path / "cache"

    def boom(*a, **k):
        raise KeyboardInterrupt("simulated crash while writing the manifest")

    monkeypatch.setattr(prepare_mod, "write_json", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(str(root), cache_dir=cache)
    _assert_no_cache_left(cache)
    monkeypatch.undo()
    ds = prepare_dataset(str(root), cache_dir=cache)
    assert (ds.root / MANIFEST).is_file() and len(ds.corpus()) == 30


def test_interrupted_parquet_write_leaves_nothing(make_beir, tmp_path, monkeypatch):
    root = make_beir()
    cache = tmp_path / "cache"
    real = pd.DataFrame.to_parquet
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError("disk full")
        return real(self, *a, **k)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(str(root), cache_dir=cache)
    assert calls["n"] == 2
    _assert_no_cache_left(cache)
    monkeypatch.undo()
    ds = prepare_dataset(str(root), cache_dir=cache)
    assert ds.splits == ["dev", "test", "train"]


def test_interrupted_rebuild_keeps_previous_cache(make_beir, tmp_path, monkeypatch):
    root = make_beir()
    cache = tmp_path / "cache"
    first = prepare_dataset(str(root), cache_dir=cache)
    before = first.manifest

    def boom(*a, **k):
        raise RuntimeError("crash")

    monkeypatch.setattr(prepare_mod, "write_json", boom)
    with pytest.raises(RuntimeError):
        prepare_dataset(str(root), cache_dir=cache, force=True)
    monkeypatch.undo()
    assert sorted(p.name for p in (cache / "datasets").iterdir()) == [first.root.name]
    assert PreparedDataset.open(first.root).manifest == before


def test_open_without_manifest_is_clear_error(tmp_path):
    with pytest.raises(TasbRayError, match="not a prepared dataset"):
        PreparedDataset.open(tmp_path)


# --- MS MARCO -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["tsv", "txt"])
def test_msmarco_dir_end_to_end(make_msmarco, tmp_path, ext):
    root = make_msmarco(qrels_ext=ext)
    (root / "queries.eval.tsv").write_text("300\tunjudged eval question\n")
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    m = ds.manifest
    assert m["source"]["kind"] == "msmarco"
    assert set(m["source"]["files"]) == {"collection.tsv", "queries.train.tsv", "queries.dev.tsv",
                                         "queries.eval.tsv", f"qrels.train.{ext}", f"qrels.dev.{ext}"}
    assert m["dev_carved_from"] is None  # it has its own dev split
    assert ds.splits == ["dev", "train"]
    assert m["counts"]["corpus"] == 12 and m["counts"]["queries"] == 11
    corpus = ds.corpus()
    assert corpus[DOC_ID].tolist()[:2] == ["0", "1"] and corpus[TEXT].iloc[0] == "passage 0 text"
    assert ds.qrels("train").values.tolist()[0] == ["100", "0", 1]
    assert ds.qrels("dev")[RELEVANCE].dtype.kind == "i"
    assert set(ds.queries("dev")[QUERY_ID]) == {"200", "201"}
    assert ds.queries("train").set_index(QUERY_ID)[TEXT]["103"] == "train question 3"
    # Second call is a hit.
    assert prepare_dataset(str(root), cache_dir=tmp_path / "cache").manifest["created"] == m["created"]


def test_msmarco_without_dev_gets_carved(make_msmarco, tmp_path):
    root = make_msmarco(queries={"train": [(str(100 + i), f"q{i}") for i in range(8)]},
                        qrels={"train": [(str(100 + i), str(i), 1) for i in range(8)]})
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache", options=PrepareOptions(0.25, 0))
    assert ds.manifest["dev_carved_from"] == "train"
    assert len(_qids(ds, "dev")) == 2
    assert _qids(ds, "dev") | _qids(ds, "train") == {str(100 + i) for i in range(8)}


def test_msmarco_query_in_two_query_files(make_msmarco, tmp_path):
    from tasb_ray.errors import DataFormatError

    root = make_msmarco(queries={"train": [("1", "a"), ("2", "b")], "dev": [("2", "again")]},
                        qrels={"train": [("1", "0", 1)]})
    with pytest.raises(DataFormatError, match="'2' appears in more than one"):
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")


def test_msmarco_dev_small_is_split_dev_and_two_files_for_one_split_fail(make_msmarco, tmp_path):
    from tasb_ray.errors import DataFormatError

    root = make_msmarco(queries={"train": [(str(100 + i), f"q{i}") for i in range(8)],
                                 "dev.small": [("200", "d0"), ("201", "d1")]},
                        qrels={"train": [(str(100 + i), str(i), 1) for i in range(8)],
                               "dev.small": [("200", "8", 1), ("201", "9", 1)]})
    ds = prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert ds.splits == ["dev", "train"] and set(ds.qrels("dev")[QUERY_ID]) == {"200", "201"}
    (root / "qrels.dev.tsv").write_text("200\t0\t10\t1\n")  # MS MARCO's full dev qrels beside dev.small
    with pytest.raises(DataFormatError) as exc:
        prepare_dataset(str(root), cache_dir=tmp_path / "cache")
    assert str(exc.value) == (f"{root / 'qrels.dev.tsv'}: split 'dev' already read from qrels.dev.small.tsv; "
                              "keep one qrels file per split in the directory")


def test_dev_carve_problems_are_one_line_errors(tmp_path):
    from tasb_ray.data.prepare import PrepareOptions
    from tasb_ray.errors import TasbRayError

    root = tmp_path / "one"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    (root / "qrels" / "train.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(TasbRayError, match=r"train\.tsv: cannot carve a dev split"):
        prepare_dataset(str(root), cache_dir=tmp_path / "c")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n{"_id": "q2", "text": "z"}\n')
    (root / "qrels" / "train.tsv").write_text("q1\td1\t1\nq2\td1\t1\n")
    with pytest.raises(TasbRayError, match="dev_fraction"):
        prepare_dataset(str(root), cache_dir=tmp_path / "c", options=PrepareOptions(dev_fraction=1.5))


def test_deeply_nested_json_is_one_line_error(tmp_path):
    from tasb_ray.data.beir import read_queries_jsonl
    from tasb_ray.errors import DataFormatError

    p = tmp_path / "queries.jsonl"
    p.write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": "b", "metadata": ' + "[" * 100000 + "]" * 100000 + "}\n")
    with pytest.raises(DataFormatError, match=r"queries\.jsonl:2: invalid JSON"):
        read_queries_jsonl(p)
