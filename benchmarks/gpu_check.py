"""Helpers of scripts/gpu_check.sh: dry-run fixtures, the GPU sweep config, and the markdown of each section.

    python benchmarks/gpu_check.py fixture DIR                 # tiny BEIR data + tiny BERT (dry runs, no weights)
    python benchmarks/gpu_check.py sweep-config OUT --dry-run DIR | --gpus-per-trial 0.25
    python benchmarks/gpu_check.py sweep-summary RUN_DIR       # trials, placement, MLflow runs (markdown)
    python benchmarks/gpu_check.py smi-summary SMI_CSV STEPS_TSV   # GPU utilisation and memory per step
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def fixture(root: Path) -> None:
    # The tests' tiny BEIR builder: a dry run needs data with train/dev/test and no download.
    sys.path.insert(0, str(REPO / "tests"))
    from beir_fixture import write_beir

    from tasb_ray.models.tiny import build_tiny_bert

    write_beir(root / "data" / "tinybeir")
    build_tiny_bert(root / "tiny-bert")
    print(root)


def sweep_config(out: Path, dry_root: Path | None, gpus_per_trial: float) -> None:
    if dry_root is not None:
        model = str(dry_root / "tiny-bert")
        base = {"name": "tiny", "work_dir": str(out.parent / "work"), "progress": False,
                "data": {"dataset": str(dry_root / "data" / "tinybeir"), "cache_dir": str(out.parent / "cache"),
                         "dev_fraction": 0.2},
                "candidates": {"depth": 10, "negatives_per_query": 3},
                "teachers": {"pairwise": {"kind": "ensemble", "components": [{"kind": "bm25"},
                                                                            {"kind": "bi-encoder", "model": model}]},
                             "inbatch": {"kind": "bm25"}},
                "clusters": {"k": 2}, "sampler": {"sampling": "tas-balanced", "batch_size": 4},
                "student": {"model": model, "query_max_len": 16, "passage_max_len": 32},
                "optim": {"lr": 1e-4, "max_steps": 2, "warmup_steps": 1}, "eval": {"every": 0, "k": 100},
                "checkpoint_every": 2, "log_every": 1}
        (out.parent / "base.yaml").write_text(yaml.safe_dump(base))
        sweep = {"name": "gpu-check-dry", "base": "base.yaml", "grid": {"seed": [0, 1]}}
    else:
        quick = yaml.safe_load((REPO / "experiments/configs/seeds-scifact-quick.yaml").read_text())
        sweep = {k: quick[k] for k in ("set", "grid", "baseline", "compare_metrics")}
        sweep.update(name="gpu-check-seeds", base=str(REPO / "experiments/configs/scifact.yaml"))
    # Pipelines (per-query latency on one CPU thread) are left out: they measure the CPU, not the GPU placement.
    sweep.update(resources={"cpus_per_trial": 2 if dry_root is None else 0.5, "gpus_per_trial": gpus_per_trial},
                 pipelines={"enabled": False}, max_failures=0)
    out.write_text(yaml.safe_dump(sweep))
    print(out)


def sweep_summary(run_dir: Path, experiment: str) -> None:
    import pandas as pd

    from tasb_ray.tracking import Tracker

    trials = pd.read_csv(run_dir / "results" / "trials.csv")
    cols = [c for c in ("key", "status", "placement/device", "placement/gpu_ids", "placement/cuda_visible_devices",
                        "final_dev/nDCG@10", "final_test/nDCG@10") if c in trials.columns]
    t = trials[cols].copy()
    if "placement/started_at" in trials.columns:
        t0 = trials["placement/started_at"].min()
        t["start s"] = (trials["placement/started_at"] - t0).round(1)
        t["end s"] = (trials["placement/ended_at"] - t0).round(1)
    print("| " + " | ".join(t.columns) + " |\n|" + "---|" * len(t.columns))
    for row in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")
    tracker = Tracker(f"sqlite:///{run_dir / 'mlflow.db'}", read_only=True)
    exp_id = tracker.experiment_id(experiment)
    runs = tracker.runs(exp_id, "trial") if exp_id is not None else []
    print(f"\nMLflow ({run_dir / 'mlflow.db'}, experiment {experiment!r}): {len(runs)} trial runs, status "
          f"{', '.join(sorted({r.status for r in runs})) or 'none'}; placement tags: "
          f"{sorted({r.tags.get('placement.device', '?') + ':' + r.tags.get('placement.gpu_ids', '?') for r in runs})}")


def smi_summary(smi: Path, steps: Path) -> None:
    """Mean and max GPU utilisation and peak memory.used of the samples inside each step's time window."""
    samples = []
    if smi.is_file():
        for row in csv.reader(smi.open()):
            try:
                samples.append((float(row[0]), float(row[1]), float(row[2])))
            except (ValueError, IndexError):
                continue
    print("| step | samples | GPU util mean % | GPU util max % | peak memory.used MiB |\n|---|---:|---:|---:|---:|")
    for line in steps.read_text().splitlines():
        name, start, end = line.split("\t")[:3]
        inside = [s for s in samples if float(start) <= s[0] <= float(end)]
        if inside:
            util = [s[1] for s in inside]
            print(f"| {name} | {len(inside)} | {sum(util) / len(util):.0f} | {max(util):.0f} | "
                  f"{max(s[2] for s in inside):.0f} |")
        else:
            print(f"| {name} | 0 | – | – | – |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fixture").add_argument("root", type=Path)
    s = sub.add_parser("sweep-config")
    s.add_argument("out", type=Path)
    s.add_argument("--dry-run", type=Path, default=None, help="fixture root: tiny data and model")
    s.add_argument("--gpus-per-trial", type=float, default=0.25)
    ss = sub.add_parser("sweep-summary")
    ss.add_argument("run_dir", type=Path)
    ss.add_argument("experiment")
    m = sub.add_parser("smi-summary")
    m.add_argument("smi", type=Path)
    m.add_argument("steps", type=Path)
    a = p.parse_args()
    if a.cmd == "fixture":
        fixture(a.root)
    elif a.cmd == "sweep-config":
        sweep_config(a.out, a.dry_run, a.gpus_per_trial)
    elif a.cmd == "sweep-summary":
        sweep_summary(a.run_dir, a.experiment)
    else:
        smi_summary(a.smi, a.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
