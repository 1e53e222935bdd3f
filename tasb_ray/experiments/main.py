"""The command line shared by ``experiments/seeds.py``, ``alpha.py`` and ``clusters.py``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import yaml

from tasb_ray.errors import TasbRayError, run_guarded
from tasb_ray.experiments.config import SweepConfig, load_sweep_config
from tasb_ray.experiments.sweep import run_sweep


def build_parser(prog: str, description: str, default_config: Path, quick_config: Path | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help=f"sweep YAML (default: {default_config})")
    if quick_config is not None:
        p.add_argument("--quick", action="store_true", help=f"the short demo sweep ({quick_config})")
    p.add_argument("--run-dir", default=None, help="sweep directory: Tune storage, Ray temp dir, MLflow DB, results "
                                                   "(default: the config's run_dir, else runs/sweeps/NAME)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///RUN_DIR/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment name (default: the sweep name)")
    p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS, else a local Ray "
                                                   "on 127.0.0.1)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray instance (default: all)")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs of a local Ray instance (default: those detected; on a CPU machine, logical GPUs)")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default: the config's)")
    p.add_argument("--gpus-per-trial", default=None,
                   help="'auto', 0, a fraction in (0, 1] (0.25: four trials share a GPU) or a whole number "
                        "(default: the config's)")
    p.add_argument("--max-concurrent-trials", type=int, default=None,
                   help="at most this many trials at once (capped at what the GPUs allow)")
    p.add_argument("--eval-workers", type=int, default=None,
                   help="encoder actors each trial reserves for its Ray Data evaluation (corpora of "
                        "eval.ray_min_passages or more; default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training config value for every trial, e.g. --set optim.max_steps=20")
    p.add_argument("--fresh", action="store_true",
                   help="start the Tune experiment anew instead of continuing the one in the run dir")
    return p


def sweep_from_args(args: argparse.Namespace, config: Path) -> SweepConfig:
    """The sweep config with the command line's settings applied (what ``main`` runs)."""
    top: dict = {}
    if args.run_dir:
        top["run_dir"] = args.run_dir
    sweep = load_sweep_config(config, top)
    if args.overrides:
        for item in args.overrides:
            if "=" not in item:
                raise TasbRayError(f"--set {item!r}: expected key=value")
            k, v = item.split("=", 1)
            sweep.set[k.strip()] = yaml.safe_load(v)
    if args.tracking_uri:
        sweep.mlflow.tracking_uri = args.tracking_uri
    if args.experiment:
        sweep.mlflow.experiment = args.experiment
    if args.address:
        sweep.ray.address = args.address
    if args.num_cpus:
        sweep.ray.num_cpus = args.num_cpus
    if args.num_gpus is not None:
        sweep.ray.num_gpus = args.num_gpus
    r = sweep.resources
    changes: dict = {}
    if args.cpus_per_trial:
        changes["cpus_per_trial"] = args.cpus_per_trial
    if args.gpus_per_trial is not None:
        changes["gpus_per_trial"] = yaml.safe_load(args.gpus_per_trial)
    if args.max_concurrent_trials:
        changes["max_concurrent_trials"] = args.max_concurrent_trials
    if args.eval_workers is not None:
        changes["eval_workers"] = args.eval_workers
    # Rebuilt from the config's values, not assigned: the dataclass validates the combination (e.g. 1.5 GPUs).
    sweep.resources = dataclasses.replace(r, **changes)
    return sweep


def main(prog: str, description: str, default_config: Path, quick_config: Path | None = None,
         argv: list[str] | None = None) -> int:
    args = build_parser(prog, description, default_config, quick_config).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = args.config or (quick_config if getattr(args, "quick", False) else default_config)

    def run():
        sweep = sweep_from_args(args, config)
        return sweep, run_sweep(sweep, fresh=args.fresh)

    out, code = run_guarded(prog, run, "interrupted; run the same command again to continue the sweep")
    if code is not None:
        return code
    sweep, result = out

    print()
    print(f"## {result.experiment}: robustness across seeds (mean ± sd)\n")
    print(result.tables["robustness"])
    print(f"## paired per-query comparisons ({', '.join(sweep.compare_metrics)}, {sweep.pipelines.split} split; "
          "against the baseline and the untrained student; Holm over the table; MDE at 80% power)\n")
    print(result.tables["comparisons"])
    print("## retrieval pipelines (test split, mean ± sd over seeds)\n")
    print(result.tables["pipelines"])
    failed = result.trials[result.trials["status"] != "FINISHED"]
    if len(failed):
        print(f"{len(failed)} trial(s) FAILED: {', '.join(failed['key'])}")
    print(f"results: {result.run_dir / 'results'}")
    if result.tracking_uri.startswith("sqlite:"):
        print("browse the runs:  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri "
              f"{result.tracking_uri} --host 127.0.0.1 --port 5000 --workers 1")
    else:
        print(f"browse the runs in the MLflow UI of {result.tracking_uri} (experiment {result.experiment!r})")
    return 1 if len(failed) == len(result.trials) else 0
