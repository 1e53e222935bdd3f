"""Write a self-contained HTML report of a sweep from its MLflow experiment.

The page shows, per configuration group, how the final metrics spread across seeds; the metrics
against α and the cluster count; the training curves of every trial; recall@k of each retrieval
pipeline; per-stage latency; and the tables behind every plot. Failed trials are listed and marked.
It needs no network to view: CSS and SVG plots are inline and there is no JavaScript.
"""

from __future__ import annotations

import argparse

HELP = "write an HTML robustness and pipeline report of a sweep from its MLflow experiment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep's name)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument("--log-artifact", action="store_true",
                   help="also attach the report to the sweep's summary run as the artifact report.html")


def run(args: argparse.Namespace) -> int:
    from tasb_ray.fileio import write_text
    from tasb_ray.reporting import collect_sweep, log_report, render_report
    from tasb_ray.reporting.collect import default_tracking_uri
    from tasb_ray.store_check import check_tracking_store

    uri = args.tracking_uri or default_tracking_uri()
    # One line in seconds for a wrong file or a dead server, before MLflow's traceback (or its minutes of retries).
    check_tracking_store(uri, must_exist=True)
    data = collect_sweep(args.experiment, uri)
    write_text(args.out, render_report(data))
    counts = ", ".join(f"{n} {s.lower()}" for s, n in data.status_counts().items())
    print(f"report: {args.out}  ({len(data.trials)} trials: {counts})")
    if args.log_artifact:
        run_id = log_report(args.out, uri, experiment=args.experiment)
        print(f"logged as artifact report.html of run {run_id}")
    return 0
