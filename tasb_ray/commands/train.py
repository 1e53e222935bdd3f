"""Train a BERT-DOT student with TAS-Balanced from a YAML config, then evaluate it on dev and test.

Shared stages (candidate pairs scored by the pairwise teacher, query clusters) are cached in the work
directory. Re-running the same command resumes from the run's last checkpoint.
"""

from __future__ import annotations

import argparse

from tasb_ray.config import dump_yaml, load_config
from tasb_ray.evaluation.metrics import format_table
from tasb_ray.pipeline.run import run_training
from tasb_ray.training.config import TrainingConfig

HELP = "train a dense retriever with TAS-Balanced from a YAML config"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG.yaml", help="run configuration (see experiments/configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set alpha=0 --set sampler.sampling=random (repeatable)")
    p.add_argument("--output-dir", default=None, help="where this run writes (default: config output_dir or runs/NAME)")
    p.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    cfg = load_config(TrainingConfig, args.config, overrides)
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    result = run_training(cfg, resume=not args.no_resume)
    print(format_table({f"{cfg.name}/{split}": m for split, m in result.metrics.items()}, cfg.eval.metrics))
    print(f"output: {result.output_dir}  (steps {result.steps}, plan {result.plan_hash[:12]})")
    return 0
