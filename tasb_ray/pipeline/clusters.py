"""The clusters stage: k-means topic clusters of the training queries, cached once per setting."""

from __future__ import annotations

from pathlib import Path

from tasb_ray.config import to_dict
from tasb_ray.data import PreparedDataset
from tasb_ray.distributed.batch_encoder import encode_bucketed
from tasb_ray.distributed.options import RayOptions
from tasb_ray.distributed.texts import encode_queries_ray
from tasb_ray.pipeline.cache import cached_stage, dataset_identity, local_model_contents
from tasb_ray.pipeline.context import student_encoder, work_dir
from tasb_ray.schema import QUERY_ID, TEXT
from tasb_ray.training.clusters import (
    cluster_quality,
    cluster_queries,
    cluster_stats,
    project_2d,
    write_clusters,
    write_projection,
)
from tasb_ray.training.config import TrainingConfig

PROJECTION_FILE = "clusters_2d.parquet"


def clusters_stage(cfg: TrainingConfig, ds: PreparedDataset, use_ray: bool = False,
                   require_cached: bool = False, ray: RayOptions | None = None) -> tuple[Path, dict]:
    """k-means topic clusters of the training queries, once per (data, encoder, k) setting.

    Queries are encoded with ``encode_bucketed`` in process, or on a Ray Data actor pool with ``use_ray``
    (:func:`tasb_ray.distributed.texts.encode_queries_ray`, which uses it too): the same vectors, the same
    clusters, the same stage key.

    The stage also holds ``clusters_2d.parquet`` (``qid, x, y, cluster``: a 2-D PCA of the normalised query
    vectors) and its info a ``quality`` entry (silhouette, agreement with another k-means seed; see
    :func:`tasb_ray.training.clusters.cluster_quality`). Stages built before these existed lack both; the key
    did not change for them.

    Args:
        cfg, ds, use_ray, require_cached, ray: see :func:`tasb_ray.pipeline.pairs.pairs_stage`.
    """
    k = cfg.clusters
    encoder_name = k.encoder or cfg.student.model
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "clusters": to_dict(k),
              "encoder": encoder_name, "pooling": cfg.student.pooling, "normalize": cfg.student.normalize,
              "query_max_len": cfg.student.query_max_len}
    models = local_model_contents([encoder_name])
    if models:  # only a model given by path changes the key: stages of packaged models stay valid
        inputs["model_contents"] = models

    def build(tmp: Path) -> dict:
        queries = ds.queries(cfg.data.train_split)
        if use_ray:
            vectors = encode_queries_ray(queries, encoder_name, pooling=cfg.student.pooling,
                                         normalize=cfg.student.normalize, query_max_len=cfg.student.query_max_len,
                                         **(ray or RayOptions()).pool())
        else:
            vectors = encode_bucketed(student_encoder(encoder_name, cfg), queries[TEXT].tolist(), "query")
        assignment = cluster_queries(queries[QUERY_ID].tolist(), vectors, k.k, k.seed, niter=k.niter)
        write_clusters(tmp / "clusters.parquet", assignment)
        write_projection(tmp / PROJECTION_FILE, project_2d(vectors, assignment))
        return {**cluster_stats(assignment, k.k), "quality": cluster_quality(vectors, assignment, k.seed, k.niter)}

    return cached_stage(work_dir(cfg), "clusters", inputs, build, require_cached=require_cached)

