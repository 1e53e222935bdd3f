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


# --- ir_datasets: one id per split over one docs store (faked) -------------------------------------------------


class _FakeSplit(_FakeDataset):
    def __init__(self, queries, qrels):
        super().__init__()
        self._queries, self._qrels = queries, qrels

    def queries_iter(self):
        yield from (Query(*q) for q in self._queries)

    def qrels_iter(self):
        yield from (Qrel(*r) for r in self._qrels)


@pytest.fixture
def fake_irds_splits(monkeypatch):
    """``fake`` (docs d1-d3) with train/judged, dev/small and test ids; ``other/test`` has its own docs."""
    mod = types.ModuleType("ir_datasets")
    ids = {
        "fake/train/judged": _FakeSplit([("q1", "first query"), ("q2", "second query"), ("q3", "third")],
                                        [("q1", "d1", 1), ("q2", "d2", 1), ("q3", "d3", 1)]),
        "fake/dev/small": _FakeSplit([("q4", "fourth query")], [("q4", "d2", 1)]),
        "fake/test": _FakeSplit([("q5", "fifth query"), ("q1", "first query")], [("q5", "d3", 2)]),
        "other/test": _FakeSplit([("q9", "x")], [("q9", "d1", 1)]),
        "fake/clash": _FakeSplit([("q1", "a different text")], [("q1", "d1", 1)]),
    }
    mod.loaded = []

    def load(dataset_id):
        mod.loaded.append(dataset_id)
        return ids[dataset_id]

    mod.load = load
    mod.docs_parent_id = lambda dataset_id: dataset_id.split("/")[0]
    monkeypatch.setitem(sys.modules, "ir_datasets", mod)
    return mod


SPLITS = "irds:train=fake/train/judged;dev=fake/dev/small;test=fake/test"


def test_irds_one_id_per_split(fake_irds_splits, tmp_path):
    src = resolve_source(SPLITS)
    assert (src.name, src.kind) == ("fake", "irds")
    ds = prepare_dataset(SPLITS, cache_dir=tmp_path / "cache")
    assert ds.splits == ["dev", "test", "train"] and ds.manifest["dev_carved_from"] is None
    assert sorted(ds.corpus()[DOC_ID]) == ["d1", "d2", "d3"]
    assert ds.queries("train")[QUERY_ID].tolist() == ["q1", "q2", "q3"]
    assert ds.queries("dev")[[QUERY_ID, TEXT]].values.tolist() == [["q4", "fourth query"]]
    assert ds.qrels("test")[[QUERY_ID, DOC_ID, RELEVANCE]].values.tolist() == [["q5", "d3", 2]]
    # q1 is listed by both train and test's queries with the same text: one row.
    assert ds.queries()[QUERY_ID].tolist().count("q1") == 1
    assert sorted(fake_irds_splits.loaded) == ["fake/dev/small", "fake/test", "fake/train/judged"]
    # Without a dev id, dev is carved from train, as for a single dataset.
    carved = prepare_dataset("irds:train=fake/train/judged;test=fake/test", cache_dir=tmp_path / "cache")
    assert carved.manifest["dev_carved_from"] == "train" and "dev" in carved.splits


def test_irds_split_ids_must_share_docs_and_agree(fake_irds_splits, tmp_path):
    with pytest.raises(TasbRayError, match="do not share one docs store: .*other/test uses other"):
        prepare_dataset("irds:train=fake/train/judged;test=other/test", cache_dir=tmp_path / "cache")
    with pytest.raises(TasbRayError, match="query id 'q1' has different texts"):
        prepare_dataset("irds:train=fake/train/judged;dev=fake/clash", cache_dir=tmp_path / "cache")
    with pytest.raises(TasbRayError, match="expected split=id pairs"):
        resolve_source("irds:train=fake/train/judged;fake/test")


def test_training_config_names_irds_splits(fake_irds_splits, tmp_path):
    from tasb_ray.config import from_dict, to_dict
    from tasb_ray.errors import ConfigError
    from tasb_ray.training.config import TrainingConfig
    from tasb_ray.pipeline.run import open_data

    data = {"irds_splits": {"train": "irds:fake/train/judged", "dev": "irds:fake/dev/small", "test": "fake/test"},
            "cache_dir": str(tmp_path / "cache")}
    cfg = from_dict(TrainingConfig, {"data": data})
    assert cfg.data.dataset == SPLITS
    assert open_data(cfg).splits == ["dev", "test", "train"]
    # The dumped config (a run's config.yaml) loads back to the same config.
    assert to_dict(from_dict(TrainingConfig, to_dict(cfg))) == to_dict(cfg)

    def bad(match, **changes):
        with pytest.raises(ConfigError, match=match):
            from_dict(TrainingConfig, {"data": {**data, **changes}})

    bad(r"^data: irds_splits: no 'train' split", irds_splits={"dev": "fake/dev/small", "test": "fake/test"})
    bad(r"^data: irds_splits\.dev: not an ir_datasets id", irds_splits={"train": "fake/train/judged", "dev": "irds:"})
    bad(r"^data: dataset: set dataset or irds_splits", dataset="msmarco")
    with pytest.raises(ConfigError, match=r"data\.irds_splits: no 'test' split"):
        from_dict(TrainingConfig, {"data": {**data, "irds_splits": {"train": "fake/train/judged"}}})
    no_test = from_dict(TrainingConfig, {"data": {**data, "irds_splits": {"train": "fake/train/judged"}},
                                         "eval": {"test": False}})
    assert no_test.data.dataset == "irds:train=fake/train/judged"
