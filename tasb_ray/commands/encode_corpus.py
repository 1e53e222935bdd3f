"""Encode every passage of a dataset's corpus into Parquet shards on Ray Data, resumably, with an optional
faiss index for 'tasb-ray evaluate --index OUT/index'.

The corpus is split into fixed row ranges (--shard-rows); each shard is written atomically as soon as it is
complete, and manifest.json is written last. Re-running the same command after an interruption encodes only
the missing shards. Ray: --address (or $RAY_ADDRESS) joins a cluster; otherwise a local instance is started on
127.0.0.1 and shut down at the end. GPUs are used when the cluster has them (one actor per GPU).
"""

from __future__ import annotations

import argparse

from tasb_ray.commands.common import add_dataset_arguments, open_dataset
from tasb_ray.distributed.encode import INDEX_KINDS, encode_corpus, read_manifest

HELP = "encode a corpus into resumable embedding shards (Ray Data), optionally with a faiss index"


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ray")
    g.add_argument("--address", default=None,
                   help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance on 127.0.0.1)")
    g.add_argument("--num-actors", type=int, default=None,
                   help="encoder actors (default: one per GPU, else one per CPU)")
    g.add_argument("--cpus-per-actor", type=int, default=None,
                   help="torch threads per CPU actor (default: the actor's share of the CPUs)")
    g.add_argument("--gpu", dest="use_gpu", action=argparse.BooleanOptionalAction, default=None,
                   help="one GPU per actor (default: when the cluster has GPUs)")
    g.add_argument("--ray-temp-dir", default=None, help="session directory of a local Ray instance")
    g.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")


def add_sharding_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sharding")
    g.add_argument("--shard-rows", type=int, default=10_000, help="rows per shard file (the unit of resumption)")
    g.add_argument("--block-rows", type=int, default=1024, help="rows per Ray Data batch handed to an actor")
    g.add_argument("--overwrite", action="store_true",
                   help="replace embeddings of another model / encoder setting / dataset found in --out")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_encoder_arguments(p: argparse.ArgumentParser, length_flag: str) -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--model", default="minilm-l6",
                   help="Hugging Face id, local path, or short name (minilm-l6 = the packaged all-MiniLM-L6-v2)")
    g.add_argument("--pooling", choices=["auto", "cls", "mean"], default="auto",
                   help="auto: the model's own (tasb-ray or sentence-transformers config), else cls")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise embeddings (default: the model's own choice)")
    g.add_argument(length_flag, type=int, default=None, help="truncation in tokens (default: the model's)")
    g.add_argument("--batch-size", type=int, default=64, help="rows per forward pass")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="directory, name on the search path, or irds:ID")
    p.add_argument("--out", required=True, help="output directory (local path or a pyarrow filesystem URI)")
    p.add_argument("--index", choices=list(INDEX_KINDS), default=None,
                   help="also build this faiss index into OUT/index (for 'tasb-ray evaluate --index OUT/index')")
    p.add_argument("--shared-fs", action="store_true",
                   help="workers read the corpus by its path (all nodes share the filesystem); default: read "
                        "on the driver's node via local://")
    add_encoder_arguments(p, "--passage-max-len")
    add_sharding_arguments(p)
    add_ray_arguments(p)
    add_dataset_arguments(p)


def gpu_choice(args: argparse.Namespace):
    return "auto" if args.use_gpu is None else args.use_gpu


def run(args: argparse.Namespace) -> int:
    ds = open_dataset(args.dataset, args)
    stats: dict = {}
    out = encode_corpus(ds, args.model, args.out, pooling=args.pooling, normalize=args.normalize,
                        passage_max_len=args.passage_max_len, batch_size=args.batch_size, block_rows=args.block_rows,
                        shard_rows=args.shard_rows, num_actors=args.num_actors, cpus_per_actor=args.cpus_per_actor,
                        use_gpu=gpu_choice(args), index=args.index, shared_fs=args.shared_fs,
                        overwrite=args.overwrite, show_progress=args.progress, address=args.address,
                        ray_temp_dir=args.ray_temp_dir, ray_num_cpus=args.num_cpus, stats=stats)
    print_summary(out, read_manifest(out), stats)
    return 0


def print_summary(out, manifest: dict, stats: dict) -> None:
    rate = stats.get("steady_rows_per_s")
    print(f"embeddings: {out}  ({manifest['rows']} rows x {manifest['dim']}, {len(manifest['shards'])} shards; "
          f"{stats.get('encoded_shards', 0)} encoded, {stats.get('reused_shards', 0)} reused"
          + (f"; {rate:.1f} rows/s steady" if rate else "") + ")")
    pool = stats.get("actor_pool")
    if pool:
        # device|Ray GPU ids|CUDA_VISIBLE_DEVICES per actor: shows which GPU each actor held, or that it fell back.
        print(f"actors: {pool['actors']} x {pool['resources']}; they saw: {', '.join(stats.get('actors_saw', []))}")
    if manifest.get("index"):
        print(f"index: {out}/{manifest['index']['path']}  ({manifest['index']['kind']}; "
              f"tasb-ray evaluate --index {out}/{manifest['index']['path']} --model ...)")
