"""Topic clusters of training queries for TAS (topic-aware sampling).

TAS (Hofstätter et al., SIGIR 2021, arXiv 2104.06967, Section 3.2) composes each batch from queries of one
cluster. Clusters come from k-means over query embeddings of a baseline dense retriever (k=2000 for MS MARCO in
the paper). As in the authors' code, similarity is the inner product of L2-normalised vectors: spherical k-means
(faiss, centroids re-normalised every iteration) and each query assigned to the centroid of highest inner product.

Cluster ids are the centroid indices ``0..k-1``; a centroid that no query is nearest to leaves an empty cluster,
which the sampler never sees (it only knows non-empty clusters through the assignment).
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Sequence

import faiss
import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score, silhouette_score

from tasb_ray.config import is_int
from tasb_ray.errors import ConfigError, TasbRayError
from tasb_ray.schema import QUERY_ID, TEXT
from tasb_ray.tables import FLOAT, ID, INT, read_table, write_table

log = logging.getLogger(__name__)

CLUSTER_COLUMNS = ("qid", "cluster")
SMALL_CLUSTER = 32  # the paper's batch size: a smaller cluster cannot fill a batch on its own


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 copy with unit L2 rows; all-zero rows stay zero (their inner product with any centroid is 0)."""
    x = np.array(vectors, dtype=np.float32, copy=True, order="C")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


def cluster_queries(qids: Sequence[str], vectors: np.ndarray, k: int, seed: int, niter: int = 20,
                    nredo: int = 1) -> pd.DataFrame:
    """Spherical k-means of query vectors → ``qid, cluster`` (input order; ``attrs["k"]`` holds the k used).

    ``k`` larger than the number of queries is clamped to it with a :class:`UserWarning` (every query may then
    be its own cluster), so small datasets and smoke runs still work; ``k < 1`` raises :class:`ConfigError`.

    Determinism: faiss samples its initial centroids from ``seed``, so the same seed and vectors give the same
    clusters. We checked identical centroids with 1 and 2 OpenMP threads (faiss-cpu 1.15, OpenBLAS), so the
    thread count is not forced to 1, which would slow clustering of large query sets.

    Args:
        qids: query ids, aligned with the rows of ``vectors``; must be unique.
        vectors: [n, dim] query embeddings (any float dtype; normalised here).
        k: number of clusters.
        seed: faiss k-means seed.
        niter: k-means iterations.
        nredo: independent k-means runs (different initial centroids); faiss keeps the one with the best
            objective. faiss starts from k randomly sampled points (no k-means++), so for small k a single run
            can merge two topics and split another; more runs cost proportionally more time.
    """
    qids = np.asarray([str(q) for q in qids], dtype=object)
    vectors = np.asarray(vectors)
    n = len(qids)
    if not is_int(k) or k < 1:
        raise ConfigError(f"k (number of clusters) must be an integer >= 1, got {k!r}")
    if not is_int(niter) or niter < 1:
        raise ConfigError(f"niter must be an integer >= 1, got {niter!r}")
    if not is_int(nredo) or nredo < 1:
        raise ConfigError(f"nredo must be an integer >= 1, got {nredo!r}")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    if vectors.ndim != 2 or len(vectors) != n:
        raise TasbRayError(f"vectors has shape {tuple(vectors.shape)}, expected {n} rows (one per qid)")
    if n == 0:
        raise TasbRayError("cluster_queries: no queries to cluster")
    if len(set(qids.tolist())) != n:
        dup = pd.Index(qids)[pd.Index(qids).duplicated()][0]
        raise TasbRayError(f"cluster_queries: query id {dup!r} appears more than once")
    if k > n:
        warnings.warn(f"k={k} clusters for {n} queries; using k={n}", UserWarning, stacklevel=2)
        k = n

    x = normalize_rows(vectors)
    if not np.isfinite(x).all():
        raise TasbRayError("cluster_queries: vectors contain NaN or infinity")
    kmeans = faiss.Kmeans(x.shape[1], int(k), niter=int(niter), seed=int(seed), spherical=True,
                          nredo=int(nredo), verbose=False)
    kmeans.train(x)
    # Assign by inner product with the (unit) centroids rather than kmeans.index's L2: for unit vectors both pick
    # the same centroid, but inner product is what the authors use and stays right if a centroid is not unit.
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(kmeans.centroids, dtype=np.float32))
    _, nearest = index.search(x, 1)
    out = pd.DataFrame({"qid": qids, "cluster": nearest[:, 0].astype(np.int64)})
    out.attrs["k"] = int(k)
    log.info("clustered %d queries into k=%d: %s", n, k, cluster_stats(out))
    return out


def encode_and_cluster(encoder, queries_df: pd.DataFrame, k: int, seed: int, batch_size: int = 64,
                       niter: int = 20, nredo: int = 1, show_progress: bool = False) -> pd.DataFrame:
    """Encode queries with ``encoder`` (kind ``query``) and cluster them (see :func:`cluster_queries`).

    Args:
        encoder: a :class:`tasb_ray.models.encoder.BertDot` (anything with ``encode(texts, kind, batch_size,
            show_progress)``); the paper uses a baseline BERT_DOT trained without TAS.
        queries_df: ``query_id, text``.
        k, seed, niter, nredo: see :func:`cluster_queries`.
        batch_size: encoding batch size.
        show_progress: an encoding progress bar.
    """
    vectors = encoder.encode(queries_df[TEXT].tolist(), kind="query", batch_size=batch_size,
                             show_progress=show_progress)
    return cluster_queries(queries_df[QUERY_ID].tolist(), vectors, k, seed, niter=niter, nredo=nredo)


def cluster_stats(assignments: pd.DataFrame, k: int | None = None) -> dict:
    """Cluster size summary for logs: ``k, queries, nonempty, empty, size_{min,median,mean,max},
    small_share`` (share of the k clusters with fewer than 32 queries, empty ones included).

    Args:
        assignments: ``qid, cluster`` with cluster ids in ``0..k-1``.
        k: number of clusters; default ``assignments.attrs["k"]``, else the largest id + 1 (empty clusters past
            the largest id then cannot be counted).
    """
    clusters = assignments["cluster"].to_numpy(dtype=np.int64)
    if k is None:
        k = assignments.attrs.get("k")
    if k is None:
        k = int(clusters.max()) + 1 if len(clusters) else 0
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= k):
        raise TasbRayError(f"cluster ids must lie in 0..{k - 1}, got {int(clusters.min())}..{int(clusters.max())}")
    sizes = np.bincount(clusters, minlength=k) if k else np.zeros(0, dtype=np.int64)
    if k == 0:
        return {"k": 0, "queries": 0, "nonempty": 0, "empty": 0, "size_min": None, "size_median": None,
                "size_mean": None, "size_max": None, "small_share": None}
    return {
        "k": int(k),
        "queries": int(len(clusters)),
        "nonempty": int((sizes > 0).sum()),
        "empty": int((sizes == 0).sum()),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_mean": float(sizes.mean()),
        "size_max": int(sizes.max()),
        "small_share": float((sizes < SMALL_CLUSTER).mean()),
    }


SILHOUETTE_SAMPLE = 10_000  # silhouette is quadratic in the queries; MS MARCO's 400k get a seeded sample


def cluster_quality(vectors: np.ndarray, assignment: pd.DataFrame, seed: int, niter: int = 20) -> dict:
    """How well separated the clusters are and how stable the clustering is.

    Keys: ``silhouette`` (cosine, on the normalised query vectors; on a seeded sample of
    :data:`SILHOUETTE_SAMPLE` queries when there are more; None with fewer than 2 non-empty clusters or as many
    clusters as queries), ``ami_seed`` (adjusted mutual information between this clustering and one of the same
    vectors with k-means seed ``seed + 1``: 1 when the seed does not matter, about 0 when it decides everything)
    and ``ami_other_seed`` (that seed). Not in the paper; for judging the clusters a dataset gives.

    Args:
        vectors: the [n, dim] query vectors the assignment was made from, in its row order.
        assignment: ``qid, cluster`` from :func:`cluster_queries` (``attrs["k"]`` is the k used).
        seed, niter: the k-means settings of the assignment.
    """
    x = normalize_rows(vectors)
    labels = assignment["cluster"].to_numpy(dtype=np.int64)
    n, n_labels = len(labels), len(np.unique(labels))
    silhouette = None
    if 2 <= n_labels < n:
        silhouette = float(silhouette_score(x, labels, metric="cosine", sample_size=min(n, SILHOUETTE_SAMPLE),
                                            random_state=seed))
    k = int(assignment.attrs.get("k", n_labels))
    other = cluster_queries(assignment["qid"].tolist(), x, k, seed + 1, niter=niter)
    ami = float(adjusted_mutual_info_score(labels, other["cluster"].to_numpy()))
    return {"silhouette": silhouette, "ami_seed": ami, "ami_other_seed": seed + 1}


def project_2d(vectors: np.ndarray, assignment: pd.DataFrame) -> pd.DataFrame:
    """``qid, x, y, cluster``: the normalised query vectors' first two principal components, for plots."""
    xy = PCA(n_components=2, svd_solver="full").fit_transform(normalize_rows(vectors)) if len(vectors) > 1 \
        else np.zeros((len(vectors), 2))
    return pd.DataFrame({"qid": assignment["qid"].to_numpy(), "x": xy[:, 0].astype(np.float64),
                         "y": xy[:, 1].astype(np.float64), "cluster": assignment["cluster"].to_numpy(np.int64)})


CLUSTERS_SCHEMA = {"qid": ID, "cluster": INT}
PROJECTION_SCHEMA = {"qid": ID, "x": FLOAT, "y": FLOAT, "cluster": INT}


def write_clusters(path: str | os.PathLike, assignments: pd.DataFrame) -> None:
    write_table(path, assignments, CLUSTERS_SCHEMA)


def read_clusters(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, CLUSTERS_SCHEMA)


def write_projection(path: str | os.PathLike, projection: pd.DataFrame) -> None:
    write_table(path, projection, PROJECTION_SCHEMA)


def read_projection(path: str | os.PathLike) -> pd.DataFrame:
    return read_table(path, PROJECTION_SCHEMA)
