import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import TasbRayError
from tasb_ray.retrieval.bm25 import BM25Index
from tasb_ray.retrieval.dense import DenseIndex
from tasb_ray.retrieval.runs import topk_to_run


def test_bm25_ranks_matching_document_first():
    ids = ["a", "b", "c"]
    texts = ["statins lower cholesterol in the blood", "tumors grow after chemotherapy stops", "dopamine neurons fire"]
    run = BM25Index(ids, texts).search(["q1", "q2"], ["cholesterol statin", "chemotherapy tumours"], k=10)
    top = run.sort_values("score", ascending=False).groupby("query_id").head(1).set_index("query_id")["doc_id"]
    assert top["q1"] == "a" and top["q2"] == "b"
    # Only matching documents are returned: zero-score padding is not a result.
    assert set(run[run.query_id == "q1"].doc_id) == {"a"}


def test_dense_flat_is_exact_and_roundtrips(tmp_path):
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(50, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    ids = [f"d{i}" for i in range(50)]
    index = DenseIndex(ids, docs, meta={"model": "m"})
    run = index.search([f"q{i}" for i in range(5)], queries, k=3)
    want = np.argsort(-(queries @ docs.T), axis=1)[:, :3]
    got = run.groupby("query_id", sort=True)["doc_id"].apply(list)
    assert [[ids[j] for j in row] for row in want] == list(got)
    index.save(tmp_path / "idx")
    again = DenseIndex.load(tmp_path / "idx")
    assert again.meta["model"] == "m"
    pd.testing.assert_frame_equal(again.search([f"q{i}" for i in range(5)], queries, k=3), run)


def test_dense_approximate_kinds_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    docs = rng.normal(size=(300, 16)).astype(np.float32)
    for kind in ("ivf", "hnsw"):
        run = DenseIndex([str(i) for i in range(300)], docs, kind=kind).search(["q"], docs[:1], k=5)
        assert run.doc_id.iloc[0] == "0" or len(run) == 5
    with pytest.raises(TasbRayError, match="unknown index kind"):
        DenseIndex(["a"], docs[:1], kind="lsh")
    with pytest.raises(TasbRayError, match="no saved dense index"):
        DenseIndex.load(tmp_path)


def test_topk_drops_missing():
    run = topk_to_run(["q"], ["a", "b"], np.array([[1, -1]]), np.array([[0.5, 0.0]]))
    assert list(run.doc_id) == ["b"]


@pytest.mark.parametrize("preset", [None, "cuda"])
def test_bm25_keeps_jax_off_the_gpu_unless_told(preset, tmp_path):
    """bm25s starts JAX at import; on a GPU box JAX would then reserve 75% of the GPU per process."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    if preset:
        env["JAX_PLATFORMS"] = preset
    code = ("import os\nfrom tasb_ray.retrieval.bm25 import BM25Index\n"
            "BM25Index(['a', 'b'], ['heart attack', 'brain tumor']).search(['q'], ['heart'], k=2)\n"
            "print(os.environ.get('JAX_PLATFORMS'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (preset or "cpu")
