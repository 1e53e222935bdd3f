"""Index choice (flat, IVF-PQ, HNSW-fp16, auto): parameters, determinism, streaming build, config errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tasb_ray.config import from_dict
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.retrieval.ann import (
    build_index,
    build_index_streaming,
    flat_bytes,
    resolve_index,
    sample_rows,
)
from tasb_ray.retrieval.dense import DenseIndex
from tasb_ray.training.config import TrainingConfig


def _clustered(n=2000, dim=32, centres=20, seed=0):
    """Unit vectors around planted centres (a corpus with topics, where an IVF coarse quantiser has something to find)."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, dim))
    x = c[rng.integers(centres, size=n)] + 0.3 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_auto_is_flat_while_float32_vectors_fit_the_budget():
    assert flat_bytes(8_841_823, 384) == 8_841_823 * 384 * 4
    assert resolve_index("auto", 5183, 384, memory_budget_bytes=4 * 2**30).kind == "flat"
    big = resolve_index("auto", 8_841_823, 384, memory_budget_bytes=4 * 2**30)
    assert big.kind == "ivf-pq"
    # MS MARCO: nlist 4 sqrt(N), 192 one-byte codes per 384-d vector, a seeded sample of 32 per list.
    assert big.factory == "IVF11894,PQ192x8np" and big.nprobe == 2974 and big.train_rows == 32 * 11894
    with pytest.raises(ConfigError, match="memory budget"):
        resolve_index("auto", 10, 8)


def test_ivf_pq_parameters_scale_down_for_small_corpora():
    p = resolve_index("ivf-pq", 5183, 384)
    assert p.factory == "IVF132,PQ192x8np" and p.nprobe == 33 and p.train_rows == 5183  # N / 39 lists
    tiny = resolve_index("ivf-pq", 50, 14)
    assert tiny.factory.startswith("IVF1,PQ7x") and tiny.nprobe == 1  # m divides the dimension
    assert resolve_index("ivf-pq", 5183, 384, nprobe=1000).nprobe == 132  # capped at nlist
    assert resolve_index("hnsw-fp16", 10, 8).factory == "HNSW32,SQfp16"


@pytest.mark.parametrize("kind", ["ivf-pq", "hnsw-fp16"])
def test_same_vectors_same_seed_same_index(kind):
    x = _clustered()
    params = resolve_index(kind, *x.shape)
    a, b = build_index(params, x), build_index(params, x)
    da, ia = a.search(x[:50], 20)
    db, ib = b.search(x[:50], 20)
    np.testing.assert_array_equal(ia, ib)
    np.testing.assert_array_equal(da, db)
    # A fair approximation: most of the exact top 10 is found.
    exact = build_index(resolve_index("flat", *x.shape), x).search(x[:50], 10)[1]
    overlap = np.mean([len(np.intersect1d(e, f[:10])) / 10 for e, f in zip(exact, ia)])
    assert overlap > 0.4  # chance is 10 / 2000


def test_training_sample_is_seeded():
    assert np.array_equal(sample_rows(1000, 10, 3), sample_rows(1000, 10, 3))
    assert not np.array_equal(sample_rows(1000, 10, 3), sample_rows(1000, 10, 4))
    assert np.array_equal(sample_rows(5, 10, 0), np.arange(5))
    x = _clustered()
    p0, p1 = resolve_index("ivf-pq", *x.shape, seed=0), resolve_index("ivf-pq", *x.shape, seed=1)
    p0, p1 = dataclasses.replace(p0, train_rows=500), dataclasses.replace(p1, train_rows=500)
    assert not np.array_equal(build_index(p0, x).search(x[:20], 10)[0], build_index(p1, x).search(x[:20], 10)[0])


@pytest.mark.parametrize("kind", ["flat", "ivf-pq"])
def test_streaming_build_equals_in_memory_build(kind):
    # Not HNSW: faiss inserts a batch level by level, so the graph depends on how the vectors were chunked.
    x = _clustered(n=1500)
    params = resolve_index(kind, *x.shape)
    params = dataclasses.replace(params, train_rows=min(params.train_rows, 700))
    whole = build_index(params, x)
    chunked = build_index_streaming(params, x.shape[1], len(x), lambda: (x[s:s + 400] for s in range(0, len(x), 400)))
    d1, i1 = whole.search(x[:30], 15)
    d2, i2 = chunked.search(x[:30], 15)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)



def test_streaming_build_refuses_chunks_that_do_not_add_up_to_rows():
    x = _clustered(n=1500)
    params = dataclasses.replace(resolve_index("ivf-pq", *x.shape), train_rows=700)
    with pytest.raises(TasbRayError, match="the chunks held 1200 vectors, 1500 expected"):
        build_index_streaming(params, x.shape[1], len(x), lambda: (x[s:s + 400] for s in range(0, 1200, 400)))


def test_dense_index_kinds_save_and_load(tmp_path):
    x = _clustered(n=600)
    ids = np.array([f"d{i}" for i in range(len(x))])
    for kind in ("ivf-pq", "hnsw-fp16"):
        index = DenseIndex(ids, x, kind=kind)
        run = index.search(["q0", "q1"], x[:2], 5)
        index.save(tmp_path / kind)
        again = DenseIndex.load(tmp_path / kind)
        assert again.meta["kind"] == kind and again.meta["params"]["kind"] == kind
        assert again.search(["q0", "q1"], x[:2], 5).equals(run)
        assert run["doc_id"].map(type).eq(str).all()  # NumPy string ids come back as plain str


@pytest.mark.parametrize("over, message", [
    ({"index": "ivfpq"}, "eval.index: must be one of flat, ivf-pq, hnsw-fp16, auto, got 'ivfpq'"),
    ({"index_memory_gb": 0}, "eval.index_memory_gb: must be a finite number > 0"),
    ({"nprobe": 0}, "eval.nprobe: must be an integer >= 1 or null"),
    ({"ray_min_passages": -1}, "eval.ray_min_passages: must be an integer >= 0"),
])
def test_bad_eval_index_settings_are_one_line_errors(over, message):
    with pytest.raises(ConfigError) as err:
        from_dict(TrainingConfig, {"alpha": 0, "eval": over})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_default_eval_index_is_exact_flat_in_process():
    e = TrainingConfig().eval
    assert e.index == "flat" and e.ray_min_passages >= 1_000_000  # SciFact, NFCorpus: today's path


def test_legacy_hnsw_adds_on_one_thread(monkeypatch):
    """HNSW's parallel insertion makes the graph depend on thread timing: the old ``hnsw`` kind adds on one thread
    too (in memory and from shards), whatever faiss's thread count is around it."""
    import faiss

    from tasb_ray.retrieval import dense

    seen = []

    class Recording(faiss.IndexHNSWFlat):
        def add(self, x):
            seen.append(faiss.omp_get_max_threads())
            return super().add(x)

    monkeypatch.setattr(dense.faiss, "IndexHNSWFlat", Recording)
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(2)
    try:
        vectors = np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32)
        DenseIndex([str(i) for i in range(50)], vectors, kind="hnsw")
        assert seen == [1] and faiss.omp_get_max_threads() == 2   # one thread for the add, restored after
    finally:
        faiss.omp_set_num_threads(before)
