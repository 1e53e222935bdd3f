"""How the Ray Data pipelines of the shared stages run: cluster, actor pool, shard size.

None of it changes what a stage computes, so none of it is in a stage key.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayOptions:
    """Ray settings for the shared stages (teacher vectors, pair scoring, query encoding for clusters).

    Attributes:
        address: Ray cluster to join when Ray is not initialised (default ``$RAY_ADDRESS``, else a local instance
            on loopback, see :func:`tasb_ray.distributed.runtime.init_ray`).
        num_actors: actor pool size (default: one per GPU, else one per ``cpus_per_actor`` CPUs).
        cpus_per_actor: torch threads per CPU actor (default: the actor's share of the CPUs).
        use_gpu: ``auto`` (GPUs when the cluster has them), True or False.
        shard_rows: rows per resumable shard of the sharded encoders.
        placement_group: a corpus-scale evaluation encodes in the caller's placement group (a sweep trial's
            reserved encoder bundles, ``resources.eval_workers``) instead of on the cluster's free CPUs.
    """

    address: str | None = None
    num_actors: int | None = None
    cpus_per_actor: int | None = None
    use_gpu: bool | str = "auto"
    shard_rows: int = 10_000
    placement_group: bool = False

    def pool(self) -> dict:
        """The actor-pool keyword arguments shared by ``score_pairs_ray``, ``encode_*_ray`` and ``encode_corpus``."""
        return {"num_actors": self.num_actors, "cpus_per_actor": self.cpus_per_actor, "use_gpu": self.use_gpu,
                "address": self.address}
