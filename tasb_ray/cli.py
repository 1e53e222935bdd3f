"""``tasb-ray`` command line: a thin dispatcher over one module per command in ``tasb_ray.commands``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from tasb_ray import __version__
from tasb_ray.errors import run_guarded

# command name -> module in tasb_ray.commands (each defines HELP, add_arguments(parser), run(args) -> int)
COMMANDS = {
    "prepare-data": "prepare_data",
    "evaluate": "evaluate",
    "train": "train",
    "encode-corpus": "encode_corpus",
    "encode-queries": "encode_queries",
    "report": "report",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tasb-ray",
        description="Train and evaluate dense retrievers with TAS-Balanced, orchestrated by Ray, tracked in MLflow.",
    )
    parser.add_argument("--version", action="version", version=f"tasb-ray {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"tasb_ray.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    code, failed = run_guarded(f"tasb-ray {args.command}", lambda: int(args._run(args) or 0))
    return code if failed is None else failed


if __name__ == "__main__":
    sys.exit(main())
