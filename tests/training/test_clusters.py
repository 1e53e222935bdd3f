import numpy as np
import pandas as pd
import pytest

from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.training.clusters import cluster_queries, cluster_stats, encode_and_cluster, read_clusters, write_clusters
from tasb_ray.training.sampling import BatchSampler, SamplerConfig


def blobs(seed: int = 0, per_blob: int = 25, dim: int = 16, k: int = 4, noise: float = 0.3):
    """k well-separated directions in dim-d, with per_blob noisy (and randomly scaled) points each."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(k), per_blob)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    # Scaling must not matter: vectors are L2-normalised before spherical k-means.
    x *= rng.uniform(0.5, 5.0, size=(len(labels), 1))
    return x.astype(np.float32), labels


def test_recovers_blobs_up_to_permutation():
    x, labels = blobs()
    qids = [f"q{i}" for i in range(len(x))]
    out = cluster_queries(qids, x, k=4, seed=0, nredo=10)
    assert list(out.columns) == ["qid", "cluster"] and out["qid"].tolist() == qids
    got = out["cluster"].to_numpy()
    # A perfect recovery is a bijection between true labels and cluster ids.
    mapping = set(zip(labels.tolist(), got.tolist()))
    assert len(mapping) == 4 and len({c for _, c in mapping}) == 4
    assert out.attrs["k"] == 4


def test_deterministic_for_seed():
    x, _ = blobs(seed=1, per_blob=60, k=6)
    qids = [str(i) for i in range(len(x))]
    a = cluster_queries(qids, x, k=10, seed=7)
    b = cluster_queries(qids, x, k=10, seed=7)
    pd.testing.assert_frame_equal(a, b)
    runs = [cluster_queries(qids, x, k=10, seed=s)["cluster"].tolist() for s in range(4)]
    assert any(r != runs[0] for r in runs[1:])  # the seed is actually used


def test_k_larger_than_n_is_clamped_with_warning():
    x, _ = blobs(per_blob=2, k=2)
    with pytest.warns(UserWarning, match="k=10 clusters for 4 queries"):
        out = cluster_queries(["a", "b", "c", "d"], x, k=10, seed=0)
    assert out.attrs["k"] == 4
    assert out["cluster"].between(0, 3).all()


def test_validation_errors():
    x, _ = blobs(per_blob=2, k=2)
    with pytest.raises(ConfigError, match="k"):
        cluster_queries(list("abcd"), x, k=0, seed=0)
    with pytest.raises(TasbRayError, match="expected 3 rows"):
        cluster_queries(list("abc"), x, k=2, seed=0)
    with pytest.raises(TasbRayError, match="'a' appears more than once"):
        cluster_queries(list("abca"), x, k=2, seed=0)


def test_cluster_stats_hand_example():
    # k=5: sizes 40, 3, 1, 0, 0 -> two empty clusters, four clusters under 32.
    assignments = pd.DataFrame({"qid": [str(i) for i in range(44)], "cluster": [0] * 40 + [1] * 3 + [2]})
    stats = cluster_stats(assignments, k=5)
    assert stats == {"k": 5, "queries": 44, "nonempty": 3, "empty": 2, "size_min": 0, "size_median": 1.0,
                     "size_mean": 8.8, "size_max": 40, "small_share": 0.8}
    # Without k (and no attrs) the largest id + 1 is used.
    assert cluster_stats(assignments)["k"] == 3
    assignments.attrs["k"] = 5
    assert cluster_stats(assignments)["empty"] == 2
    with pytest.raises(TasbRayError, match="cluster ids"):
        cluster_stats(assignments, k=2)


def test_encode_and_cluster_feeds_the_sampler(tiny_model, tmp_path):
    from tasb_ray.models.encoder import BertDot

    queries = pd.DataFrame({"query_id": [f"q{i}" for i in range(12)],
                            "text": [f"what is {w} number {i}" for i, w in enumerate(["heart", "brain", "virus"] * 4)]})
    encoder = BertDot(str(tiny_model))
    out = encode_and_cluster(encoder, queries, k=3, seed=0, batch_size=4)
    assert out["qid"].tolist() == queries["query_id"].tolist() and out["cluster"].between(0, 2).all()
    write_clusters(tmp_path / "clusters.parquet", out)
    back = read_clusters(tmp_path / "clusters.parquet")
    pd.testing.assert_frame_equal(back, out[["qid", "cluster"]])
    pairs = pd.DataFrame({"qid": back["qid"], "pos_pid": "p", "neg_pid": "n", "pos_score": 1.0, "neg_score": 0.0})
    batch = next(iter(BatchSampler(pairs, SamplerConfig(sampling="tas", batch_size=2), clusters=back)))
    assert len(batch) == 2


def test_cluster_quality_separates_blobs_from_noise():
    from tasb_ray.training.clusters import cluster_quality

    x, _ = blobs(seed=2, per_blob=40, k=4, noise=0.2)
    qids = [f"q{i}" for i in range(len(x))]
    good = cluster_quality(x, cluster_queries(qids, x, k=4, seed=0, nredo=5), seed=0)
    noise = np.random.default_rng(0).normal(size=x.shape).astype(np.float32)
    bad = cluster_quality(noise, cluster_queries(qids, noise, k=4, seed=0), seed=0)
    assert good["silhouette"] > 0.5 > bad["silhouette"] + 0.3
    assert good["ami_seed"] > 0.9 > bad["ami_seed"] + 0.3  # noise: another seed gives another clustering
    assert good["ami_other_seed"] == 1
    one = cluster_queries(qids[:3], x[:3], k=1, seed=0)
    assert cluster_quality(x[:3], one, seed=0)["silhouette"] is None


def test_projection_keeps_qids_clusters_and_the_main_direction(tmp_path):
    from tasb_ray.training.clusters import project_2d, read_projection, write_projection

    x, labels = blobs(seed=3, per_blob=30, k=2, noise=0.1)
    qids = [f"q{i}" for i in range(len(x))]
    assignment = cluster_queries(qids, x, k=2, seed=0)
    proj = project_2d(x, assignment)
    assert list(proj.columns) == ["qid", "x", "y", "cluster"] and proj["qid"].tolist() == qids
    # Two blobs: the first component separates them.
    assert np.sign(proj["x"].to_numpy()[labels == 0]).std() == 0 and np.sign(proj["x"].to_numpy()[labels == 1]).std() == 0
    write_projection(tmp_path / "p.parquet", proj)
    pd.testing.assert_frame_equal(read_projection(tmp_path / "p.parquet"), proj, check_dtype=False)
