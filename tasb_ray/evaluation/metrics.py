"""Retrieval metrics through ir-measures, with TREC conventions.

nDCG uses the graded judgements; recall and MRR are binarised at ``rel_level`` (1 for BEIR,
2 for TREC-DL). Queries judged in the qrels but missing from the run count as 0 (trec_eval ``-c``).
"""

from __future__ import annotations

from typing import Sequence

import ir_measures
import pandas as pd

from tasb_ray.schema import DOC_ID, QUERY_ID, RELEVANCE, SCORE

DEFAULT_METRICS = ("nDCG@10", "MRR@10", "R@100", "R@1000")


def to_measure(name: str, rel_level: int = 1):
    """``nDCG@10`` | ``MRR@10`` | ``R@100`` | ``P@10`` | ``MAP`` ... → an ir-measures measure object."""
    base, _, cutoff = name.partition("@")
    base = {"MRR": "RR"}.get(base, base)
    graded = base.startswith("nDCG")
    spec = base if graded or rel_level == 1 else f"{base}(rel={rel_level})"
    return ir_measures.parse_measure(f"{spec}@{cutoff}" if cutoff else spec)


def check_metric_names(names: Sequence[str], what: str = "--metrics") -> None:
    """Refuse a name ir-measures cannot parse (``nDCG@ten``) before any retrieval runs, in one line."""
    from tasb_ray.errors import ConfigError

    for name in names:
        try:
            to_measure(str(name))
        except Exception as e:  # ir-measures raises ValueError, NameError or SyntaxError by parse stage
            detail = " ".join(str(e).split()) or type(e).__name__
            raise ConfigError(f"{what}: unknown metric {name!r} ({detail}); e.g. nDCG@10, MRR@10, R@100, P@10, MAP") from None


def _inputs(run: pd.DataFrame, qrels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    run = run[[QUERY_ID, DOC_ID, SCORE]].astype({QUERY_ID: str, DOC_ID: str, SCORE: float})
    qrels = qrels[[QUERY_ID, DOC_ID, RELEVANCE]].astype({QUERY_ID: str, DOC_ID: str, RELEVANCE: int})
    return run, qrels


def per_query(run: pd.DataFrame, qrels: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
              rel_level: int = 1) -> pd.DataFrame:
    """One row per judged query, one column per metric (missing queries filled with 0)."""
    run, qrels = _inputs(run, qrels)
    measures = {to_measure(m, rel_level): m for m in metrics}
    rows = [(r.query_id, measures[r.measure], r.value) for r in ir_measures.iter_calc(list(measures), qrels, run)]
    table = pd.DataFrame(rows, columns=[QUERY_ID, "metric", "value"]).pivot(index=QUERY_ID, columns="metric",
                                                                            values="value")
    judged = sorted(qrels[QUERY_ID].unique())
    return table.reindex(index=judged, columns=list(metrics)).fillna(0.0).rename_axis(columns=None)


def evaluate(run: pd.DataFrame, qrels: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
             rel_level: int = 1) -> dict[str, float]:
    """Mean of each metric over the judged queries."""
    table = per_query(run, qrels, metrics, rel_level)
    return {m: float(table[m].mean()) for m in metrics}


def format_table(rows: dict[str, dict[str, float]], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """A fixed-width table: one row per system, one column per metric (4 decimals)."""
    width = max([len("system")] + [len(k) for k in rows])
    head = "system".ljust(width) + "".join(f"  {m:>8}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, vals in rows.items():
        lines.append(name.ljust(width) + "".join(f"  {vals.get(m, float('nan')):>8.4f}" for m in metrics))
    return "\n".join(lines)
