"""Sharded, resumable corpus encoding on Ray Data (tiny model, tiny corpus, one local Ray per module)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from beir_fixture import write_beir

from tasb_ray.data import prepare_dataset
from tasb_ray.distributed.encode import (
    MANIFEST,
    InjectedFailure,
    _Out,
    encode_corpus,
    encode_queries,
    load_embeddings,
    read_manifest,
    shard_name,
)
from tasb_ray.errors import TasbRayError

SHARD_ROWS = 7  # 32 passages -> shards of 7, 7, 7, 7, 4


@pytest.fixture(scope="module")
def beir_dir(tmp_path_factory):
    return write_beir(tmp_path_factory.mktemp("data") / "tinybeir")


@pytest.fixture(scope="module")
def prepared(beir_dir, tmp_path_factory):
    return prepare_dataset(str(beir_dir), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def full_run(ray_local, prepared, tiny_model, tmp_path_factory):
    """One uninterrupted run with the default actor pool (2 actors on 2 CPUs) and a flat index."""
    out = tmp_path_factory.mktemp("full") / "emb"
    stats: dict = {}
    # block_rows=4 does not divide shard_rows=7: Ray batches straddle shard boundaries.
    encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, block_rows=4, batch_size=3,
                  index="flat", show_progress=False, stats=stats)
    return out, stats


def _shards(out):
    return sorted(p.name for p in out.iterdir() if p.name.startswith("shard-"))


def test_ray_path_equals_in_process_encoding(full_run, prepared, tiny_model):
    from tasb_ray.models.encoder import BertDot

    out, stats = full_run
    assert stats["encoded_shards"] == 5 and stats["reused_shards"] == 0
    assert _shards(out) == [shard_name(i) for i in range(5)]
    ids, vectors = load_embeddings(out, verify=True)
    corpus = prepared.corpus()
    assert list(ids) == list(corpus["doc_id"])
    want = BertDot(str(tiny_model)).encode(corpus["text"].tolist(), "passage", batch_size=8)
    np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)

    m = read_manifest(out)
    assert m["rows"] == 32 and m["dim"] == vectors.shape[1] and m["shard_rows"] == SHARD_ROWS
    assert [s["rows"] for s in m["shards"]] == [7, 7, 7, 7, 4]
    assert m["model"] == str(tiny_model.resolve()) and m["encoder"]["pooling"] == "cls"
    assert m["dataset"]["name"] == prepared.name
    assert m["dataset"]["sha256"] == prepared.manifest["tables"]["corpus.parquet"]["sha256"]
    schema = pq.read_schema(out / shard_name(0))
    assert str(schema.field("doc_id").type) == "string"
    assert str(schema.field("embedding").type) == f"fixed_size_list<element: float>[{vectors.shape[1]}]"


def test_kill_and_resume_recomputes_only_missing_shards(full_run, prepared, tiny_model, tmp_path):
    out = tmp_path / "emb"
    with pytest.raises(InjectedFailure):
        encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, block_rows=4, batch_size=3,
                      num_actors=1, fail_after_shards=2, show_progress=False)
    # Nothing looks complete: no manifest, no partial file under a final name, only whole shards.
    assert not (out / MANIFEST).exists()
    assert _shards(out) == [shard_name(0), shard_name(1)]
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    for name in _shards(out):
        assert pq.read_metadata(out / name).num_rows == SHARD_ROWS
    with pytest.raises(TasbRayError, match="did not finish"):
        load_embeddings(out)
    stamps = {n: (out / n).stat().st_mtime_ns for n in _shards(out)}

    stats: dict = {}
    encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, block_rows=4, batch_size=3,
                  num_actors=1, show_progress=False, stats=stats)
    assert (stats["encoded_shards"], stats["reused_shards"]) == (3, 2)
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps  # kept shards not rewritten
    assert read_manifest(out)["last_run"]["encoded_shards"] == 3
    # Identical to the uninterrupted run, bit for bit (padding per text, not per batch).
    full, _ = full_run
    for i in range(5):
        assert (out / shard_name(i)).read_bytes() == (full / shard_name(i)).read_bytes(), shard_name(i)
    ids_a, vec_a = load_embeddings(out)
    ids_b, vec_b = load_embeddings(full)
    assert list(ids_a) == list(ids_b) and np.array_equal(vec_a, vec_b)

    # A complete directory: a rerun encodes nothing and does not start Ray work.
    again: dict = {}
    encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, show_progress=False, stats=again)
    assert (again["encoded_shards"], again["reused_shards"]) == (0, 5)
    assert {n: (out / n).stat().st_mtime_ns for n in stamps} == stamps


def test_uri_output_equals_the_local_path_output(full_run, prepared, tiny_model, tmp_path):
    """An output given as a pyarrow-filesystem URI (file:// here) holds the same shards and vectors."""
    uri = (tmp_path / "emb-uri").as_uri()
    assert uri.startswith("file:///")
    encode_corpus(prepared, str(tiny_model), uri, shard_rows=SHARD_ROWS, block_rows=4, batch_size=3,
                  show_progress=False)
    full, _ = full_run
    assert _shards(tmp_path / "emb-uri") == _shards(full)
    ids_a, vec_a = load_embeddings(uri, verify=True)
    ids_b, vec_b = load_embeddings(full)
    assert list(ids_a) == list(ids_b)
    np.testing.assert_allclose(vec_a, vec_b, atol=1e-6, rtol=0)
    assert read_manifest(uri)["rows"] == 32


def test_failed_shard_write_leaves_nothing_under_the_final_name(tmp_path):
    out = _Out(tmp_path / "emb")

    class MoveFails:
        def __init__(self, fs):
            self._fs = fs

        def __getattr__(self, name):
            return getattr(self._fs, name)

        def move(self, src, dst):
            raise OSError("disk gone")

    out.fs = MoveFails(out.fs)
    with pytest.raises(OSError, match="disk gone"):
        out.write_atomic(shard_name(0), b"x" * 1000)
    assert list((tmp_path / "emb").iterdir()) == []


def test_other_model_into_same_out_is_a_clear_error(full_run, prepared, tiny_model, tmp_path):
    from tasb_ray.models.tiny import build_tiny_bert

    out, _ = full_run
    before = {n: (out / n).stat().st_mtime_ns for n in _shards(out) + [MANIFEST]}
    other = build_tiny_bert(tmp_path / "other-tiny", seed=1)
    with pytest.raises(TasbRayError, match="different encoding.*--overwrite"):
        encode_corpus(prepared, str(other), out, shard_rows=SHARD_ROWS, show_progress=False)
    with pytest.raises(TasbRayError, match="encoder settings"):
        encode_corpus(prepared, str(tiny_model), out, shard_rows=SHARD_ROWS, pooling="mean", show_progress=False)
    with pytest.raises(TasbRayError, match="shard_rows"):
        encode_corpus(prepared, str(tiny_model), out, shard_rows=8, show_progress=False)
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before


def test_evaluate_uses_the_saved_index(full_run, beir_dir, tiny_model, tmp_path):
    from tasb_ray.cli import main

    out, _ = full_run
    index = read_manifest(out)["index"]
    assert index["kind"] == "flat" and (out / "index" / "index.faiss").is_file()
    common = ["evaluate", "--dataset", str(beir_dir), "--retriever", "dense", "--model", str(tiny_model),
              "--cache-dir", str(tmp_path / "cache"), "--split", "train", "--k", "10"]
    assert main(common + ["--index", str(out / "index"), "--out", str(tmp_path / "with.trec")]) == 0
    assert main(common + ["--out", str(tmp_path / "without.trec")]) == 0
    with_index = json.loads((tmp_path / "with.metrics.json").read_text())["metrics"]
    without = json.loads((tmp_path / "without.metrics.json").read_text())["metrics"]
    assert with_index.keys() == without.keys()
    for k in with_index:
        assert with_index[k] == pytest.approx(without[k], abs=1e-9), k


def test_encode_queries_shards_query_ids(ray_local, prepared, tiny_model, tmp_path):
    from tasb_ray.models.encoder import BertDot

    out = tmp_path / "q"
    encode_queries(prepared, "train", str(tiny_model), out, shard_rows=5, num_actors=1, show_progress=False)
    ids, vectors = load_embeddings(out, verify=True)
    queries = prepared.queries("train")
    assert list(ids) == list(queries["query_id"]) and len(_shards(out)) == -(-len(queries) // 5)
    want = BertDot(str(tiny_model)).encode(queries["text"].tolist(), "query")
    np.testing.assert_allclose(vectors, want, atol=1e-5, rtol=0)
    assert read_manifest(out)["kind"] == "query" and read_manifest(out)["dataset"]["split"] == "train"


def test_manifest_entry_outside_the_directory_is_refused(tmp_path):
    """A manifest naming ``../outside/other.parquet`` must not make a reader open a file outside its directory."""
    import json

    out = tmp_path / "emb"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other.parquet").write_bytes(b"PAR1")
    (out / MANIFEST).write_text(json.dumps({"rows": 1, "dim": 2, "id_column": "doc_id",
                                            "shards": [{"file": "../outside/other.parquet", "rows": 1}]}))
    with pytest.raises(TasbRayError, match=r"shard file '\.\./outside/other\.parquet' is not a shard name"):
        load_embeddings(out)


def test_cpu_pool_leaves_a_whole_cpu_free_on_every_node():
    from tasb_ray.distributed.ray_data import cpu_actor_resources, cpu_pool

    assert cpu_pool(2) == (2, 1, 0.5)  # one node: one CPU free in all
    # Two 1-CPU nodes: half a CPU free on each fits no 1-CPU read task, so the actors reserve no CPU, and a token
    # of memory so that SPREAD still places them on different nodes.
    assert cpu_pool(2, node_cpus=[1, 1]) == (2, 1, 0.0)
    assert cpu_actor_resources(0.0) == {"num_cpus": 0, "memory": 2**20}
    assert cpu_pool(16, 2, node_cpus=[8, 8]) == (2, 8, 7.0)  # one actor per node, one CPU of each node free
    assert cpu_pool(16, 4, node_cpus=[8, 8]) == (4, 4, 3.5)
