"""HTML robustness and pipeline report of a sweep, read from its MLflow experiment (``tasb-ray report``).

``collect`` reads MLflow into frames, ``tables`` derives the tables behind the plots, ``plots`` draws
them as inline SVG, ``html`` assembles the page, and ``report`` ties them together.
"""

from tasb_ray.reporting.collect import SweepData, collect_sweep
from tasb_ray.reporting.report import REPORT_NAME, build_report, log_report, render_report

__all__ = ["REPORT_NAME", "SweepData", "build_report", "collect_sweep", "log_report", "render_report"]
