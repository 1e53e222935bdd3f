"""Convert a dataset once to Parquet in the cache (with a manifest of source files, checksums and counts).

DATASET is a directory (BEIR layout, or MS MARCO style with collection.tsv), a name found on the
search path ($TASB_RAY_DATA, then ../shared/data), or an ir_datasets id (irds:ID).
"""

from __future__ import annotations

import argparse
import json

from tasb_ray.commands.common import add_dataset_arguments, open_dataset

HELP = "validate a dataset and convert it to the Parquet cache"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="directory, name on the search path, or irds:ID")
    add_dataset_arguments(p)
    p.add_argument("--force", action="store_true", help="rebuild even when the cache is fresh")


def run(args: argparse.Namespace) -> int:
    ds = open_dataset(args.dataset, args, force=args.force)
    print(f"cache: {ds.root}")
    print(json.dumps(ds.manifest["counts"], indent=2))
    return 0
