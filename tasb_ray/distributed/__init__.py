"""Ray services: the runtime, actor pools for batch work handed in, and sharded resumable encoding on Ray Data."""

from tasb_ray.distributed.encode import (
    encode_corpus,
    encode_queries,
    load_embeddings,
    read_manifest,
)
from tasb_ray.distributed.runtime import init_ray, ray_session

__all__ = ["encode_corpus", "encode_queries", "load_embeddings", "read_manifest", "init_ray", "ray_session"]
