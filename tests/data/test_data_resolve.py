"""Dataset resolution: directories, names on TASB_RAY_DATA, unknown names, and ir_datasets ids (faked)."""

from __future__ import annotations

import sys
import types
from collections import namedtuple

import pytest

import tasb_ray.data.irds as irds_mod
from tasb_ray.data.prepare import prepare_dataset, resolve_source
from tasb_ray.errors import TasbRayError
from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, TEXT

UNIQUE = "tasbray-test-only-dataset-7f3a"


@pytest.fixture(autouse=True)
def _isolate(monkeypatch, tmp_path):
    monkeypatch.delenv("TASB_RAY_DATA", raising=False)
    monkeypatch.delenv("TASB_RAY_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)


def test_name_found_via_env_var(make_beir, tmp_path, monkeypatch):
    base = tmp_path / "datasets_here"
    root = make_beir(name=UNIQUE, root=base)
    monkeypatch.setenv("TASB_RAY_DATA", str(tmp_path / "empty-first") + ":" + str(base))
    src = resolve_source(UNIQUE)
    assert (src.name, src.kind) == (UNIQUE, "beir")
    assert src.location == str(root.resolve())
    ds = prepare_dataset(UNIQUE, cache_dir=tmp_path / "cache")
    assert ds.name == UNIQUE and ds.manifest["source"]["location"] == str(root.resolve())


def test_msmarco_name_via_env_var(make_msmarco, tmp_path, monkeypatch):
    root = make_msmarco(name=UNIQUE)
    monkeypatch.setenv("TASB_RAY_DATA", str(root.parent))
    assert resolve_source(UNIQUE).kind == "msmarco"


def test_directory_path_resolves(make_beir):
    root = make_beir(name="somewhere")
    src = resolve_source(str(root))
    assert (src.name, src.kind) == ("somewhere", "beir")


def test_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(TasbRayError, match="not a dataset directory"):
        resolve_source(str(tmp_path / "junk"))


def test_unknown_name_is_clear_error(monkeypatch):
    monkeypatch.setattr(irds_mod, "available", lambda: False)
    with pytest.raises(TasbRayError) as exc:
        resolve_source("no-such-dataset-" + UNIQUE)
    msg = str(exc.value)
    assert "'no-such-dataset-" + UNIQUE + "' not found" in msg
    assert "TASB_RAY_DATA" in msg
    with pytest.raises(TasbRayError):
        prepare_dataset("no-such-dataset-" + UNIQUE)


# --- ir_datasets (faked) ------------------------------------------------------------------------

Doc = namedtuple("Doc", "doc_id title text")
Query = namedtuple("Query", "query_id text")
Qrel = namedtuple("Qrel", "query_id doc_id relevance")


class _FakeDataset:
    def __init__(self, docs=True):
        self._docs = docs

    def has_docs(self):
        return self._docs

    def has_queries(self):
        return True

    def has_qrels(self):
        return True

    def docs_iter(self):
        yield Doc("d1", "Title", "body one")
        yield Doc("d2", "", "body two")
        yield Doc("d3", None, "body three")

    def queries_iter(self):
        yield Query("q1", "first query")
        yield Query("q2", "second query")

    def qrels_iter(self):
        yield Qrel("q1", "d1", 2)
        yield Qrel("q2", "d3", 1)


@pytest.fixture
def fake_irds(monkeypatch):
    mod = types.ModuleType("ir_datasets")
    loaded = []

    def load(dataset_id):
        loaded.append(dataset_id)
        if dataset_id == "fake/test":
            return _FakeDataset()
        if dataset_id == "fake/nodocs":
            return _FakeDataset(docs=False)
        raise KeyError(dataset_id)

    mod.load = load
    mod.loaded = loaded
    monkeypatch.setitem(sys.modules, "ir_datasets", mod)
    return mod


def test_irds_prepare_via_fake_module(fake_irds, tmp_path):
    ds = prepare_dataset("irds:fake/test", cache_dir=tmp_path / "cache")
    assert fake_irds.loaded == ["fake/test"]
    assert ds.name == "fake_test"
    assert ds.manifest["source"]["kind"] == "irds" and ds.manifest["source"]["location"] == "fake/test"
    assert ds.splits == ["test"]
    assert dict(zip(ds.corpus()[DOC_ID], ds.corpus()[TEXT])) == {
        "d1": "Title body one", "d2": "body two", "d3": "body three"}
    assert ds.queries()[[QUERY_ID, TEXT]].values.tolist() == [["q1", "first query"], ["q2", "second query"]]
    assert ds.qrels("test")[[QUERY_ID, DOC_ID, RELEVANCE]].values.tolist() == [["q1", "d1", 2], ["q2", "d3", 1]]
    # Second call hits the cache and does not load again.
    again = prepare_dataset("irds:fake/test", cache_dir=tmp_path / "cache")
    assert again.manifest["created"] == ds.manifest["created"] and fake_irds.loaded == ["fake/test"]


def test_irds_bare_id_when_available(fake_irds, tmp_path):
    src = resolve_source("fake/test")
    assert (src.kind, src.location, src.name) == ("irds", "fake/test", "fake_test")


def test_irds_unknown_id_and_missing_parts(fake_irds, tmp_path):
    with pytest.raises(TasbRayError, match="unknown ir_datasets id"):
        prepare_dataset("irds:fake/missing", cache_dir=tmp_path / "cache")
    with pytest.raises(TasbRayError, match="needs docs, queries and qrels"):
        prepare_dataset("irds:fake/nodocs", cache_dir=tmp_path / "cache")


def test_irds_not_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(irds_mod, "available", lambda: False)
    with pytest.raises(TasbRayError, match="ir_datasets is not installed"):
        prepare_dataset("irds:fake/test", cache_dir=tmp_path / "cache")
