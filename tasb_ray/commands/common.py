"""Arguments several commands share."""

from __future__ import annotations

import argparse

from tasb_ray.data import PreparedDataset, prepare_dataset
from tasb_ray.data.prepare import PrepareOptions


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="where converted datasets live (default: $TASB_RAY_CACHE, else ~/.cache/tasb-ray)")
    p.add_argument("--dev-fraction", type=float, default=0.1,
                   help="share of training queries carved into 'dev' when the dataset has no dev split")
    p.add_argument("--dev-seed", type=int, default=0, help="seed of the dev carve")


def open_dataset(name: str, args: argparse.Namespace, force: bool = False, log=print) -> PreparedDataset:
    return prepare_dataset(name, cache_dir=args.cache_dir, force=force, log=log,
                           options=PrepareOptions(dev_fraction=args.dev_fraction, dev_seed=args.dev_seed))


def add_encoder_arguments(p: argparse.ArgumentParser, default_model: str | None = "minilm-l6") -> None:
    g = p.add_argument_group("encoder")
    g.add_argument("--model", default=default_model,
                   help="Hugging Face id, local path, or short name (minilm-l6 = the packaged all-MiniLM-L6-v2)")
    g.add_argument("--pooling", choices=["auto", "cls", "mean"], default="auto",
                   help="auto: the model's own (tasb-ray or sentence-transformers config), else cls")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                   help="L2-normalise embeddings (default: the model's own choice)")
    g.add_argument("--query-max-len", type=int, default=None, help="query truncation in tokens (default: model's)")
    g.add_argument("--passage-max-len", type=int, default=None, help="passage truncation in tokens (default: model's)")
    g.add_argument("--batch-size", type=int, default=64, help="encoding batch size")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
