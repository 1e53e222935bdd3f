"""Encode the queries of one split into Parquet shards on Ray Data, resumably (same layout as encode-corpus,
with query_id instead of doc_id). Re-running the same command after an interruption encodes only the missing
shards.
"""

from __future__ import annotations

import argparse

from tasb_ray.commands.common import add_dataset_arguments, open_dataset
from tasb_ray.commands.encode_corpus import (
    add_encoder_arguments,
    add_ray_arguments,
    add_sharding_arguments,
    gpu_choice,
    print_summary,
)
from tasb_ray.distributed.encode import encode_queries, read_manifest

HELP = "encode the queries of a split into resumable embedding shards (Ray Data)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="directory, name on the search path, or irds:ID")
    p.add_argument("--split", default="train", help="qrels split whose queries are encoded ('all': every query)")
    p.add_argument("--out", required=True, help="output directory (local path or a pyarrow filesystem URI)")
    add_encoder_arguments(p, "--query-max-len")
    add_sharding_arguments(p)
    add_ray_arguments(p)
    add_dataset_arguments(p)


def run(args: argparse.Namespace) -> int:
    ds = open_dataset(args.dataset, args)
    split = None if args.split == "all" else args.split
    if split is not None:
        ds.qrels(split)  # a clear error naming the available splits
    stats: dict = {}
    out = encode_queries(ds, split, args.model, args.out, pooling=args.pooling, normalize=args.normalize,
                         query_max_len=args.query_max_len, batch_size=args.batch_size, block_rows=args.block_rows,
                         shard_rows=args.shard_rows, num_actors=args.num_actors, cpus_per_actor=args.cpus_per_actor,
                         use_gpu=gpu_choice(args), overwrite=args.overwrite, show_progress=args.progress,
                         address=args.address, ray_temp_dir=args.ray_temp_dir, ray_num_cpus=args.num_cpus,
                         stats=stats)
    print_summary(out, read_manifest(out), stats)
    return 0
