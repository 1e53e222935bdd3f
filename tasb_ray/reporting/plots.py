"""Matplotlib figures of a sweep, rendered to inline SVG strings (no JavaScript, no fonts to fetch).

Figures are built with the object API (``matplotlib.figure.Figure``), never pyplot, so no GUI backend
or global figure state is involved. Failed and unfinished trials are always drawn: a red ``x`` at their
value, or on the lower edge of the axes when they logged none, and dashed training curves.
"""

from __future__ import annotations

import io
import math
import re

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from tasb_ray.reporting.frames import knob_values, series_label
from tasb_ray.tracking import FINISHED

FAILED_STYLE = {"marker": "x", "color": "#d62728", "markersize": 9, "markeredgewidth": 2, "linestyle": "none"}
REFERENCE_STYLE = {"color": "#555", "linestyle": ":", "linewidth": 1.3}
RC = {"svg.fonttype": "none", "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"], "font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 10}


def pretty(metric: str) -> str:
    """``final_test/nDCG_10`` → ``final_test nDCG@10`` (MLflow keys cannot hold ``@``)."""
    return re.sub(r"_(\d+)$", r"@\1", metric).replace("/", " ")


def palette(labels) -> dict[str, str]:
    colors = matplotlib.colormaps["tab10"].colors
    return {label: matplotlib.colors.to_hex(colors[i % len(colors)]) for i, label in enumerate(labels)}


def to_svg(fig: Figure, prefix: str) -> str:
    """The figure as an ``<svg>`` element whose internal ids carry ``prefix``.

    Several SVGs inline in one page share the document's id space, and matplotlib names markers and
    clip paths by content hash, so two figures could define the same id differently.
    """
    buf = io.StringIO()
    with matplotlib.rc_context({**RC, "svg.hashsalt": prefix}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)  # RDF boilerplate
    # Coordinates in points to 2 decimals instead of 6 (attribute values only, never label text).
    svg = re.sub(r'="([^"]*)"', lambda m: '="' + re.sub(r"(\.\d\d)\d+", r"\1", m.group(1)) + '"', svg)
    referenced = set(re.findall(r'(?:href="|url\()#([^"\)]+)', svg))
    # matplotlib names every group; only ids that are referenced matter, and they get the prefix.
    svg = re.sub(r'\sid="([^"]+)"', lambda m: f' id="{prefix}-{m.group(1)}"' if m.group(1) in referenced else "", svg)
    if referenced:
        pattern = re.compile(r'(href="|url\()#(' + "|".join(map(re.escape, sorted(referenced, key=len, reverse=True)))
                             + r')(?=["\)])')
        svg = pattern.sub(lambda m: f"{m.group(1)}#{prefix}-{m.group(2)}", svg)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{prefix}" ', 1)


def _grid(n: int, ncols: int, w: float = 3.4, h: float = 2.8) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(w * ncols, h * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _mark_missing(ax, xs) -> None:
    """Red ``x`` on the lower edge of the axes at data x positions: trials that logged no value."""
    if len(xs):
        ax.plot(xs, [0.02] * len(xs), transform=blended_transform_factory(ax.transData, ax.transAxes),
                clip_on=False, **FAILED_STYLE)


def _jitter(n: int, width: float) -> np.ndarray:
    # Deterministic spread so that a re-run of the report draws the same picture.
    return np.zeros(n) if n < 2 else np.linspace(-width, width, n)


def short_labels(groups: list[str]) -> tuple[list[str], str]:
    """Group labels without their keys when every label is ``k=v,...`` over the same keys, and those keys.

    ``["sampler.sampling=random", "sampler.sampling=tasb"]`` → ``(["random", "tasb"], "sampler.sampling")``; a bare
    name among them (``untrained``) is kept.
    """
    parts = [[p.partition("=") for p in g.split(",")] for g in groups]
    # A bare name (the untrained reference) stays as it is beside shortened k=v labels.
    kv = [ps for ps in parts if all(sep for _, sep, _ in ps)]
    keys = {tuple(k for k, _, _ in ps) for ps in kv}
    if kv and len(keys) == 1 and all(len(ps) == 1 and not ps[0][1] for ps in parts if ps not in kv):
        return [",\n".join(v for _, _, v in ps) if ps in kv else ps[0][0] for ps in parts], ", ".join(next(iter(keys)))
    return [g.replace(",", ",\n") for g in groups], "configuration group"


def seed_spread(trials: pd.DataFrame, metrics: list[str], reference: dict[str, float] | None = None) -> str:
    """Per metric, one column per configuration group: the seeds' values, a box, and mean ± sd.

    ``reference``: metric → the untrained student's value, drawn as a dotted line across the groups.
    """
    reference = reference or {}
    groups = list(dict.fromkeys(trials["group"]))
    colors = palette(groups)
    with matplotlib.rc_context(RC):
        labels, xlabel = short_labels(groups)
        ncols = 4 if len(groups) <= 3 else 2 if len(groups) <= 8 else 1
        fig, axes = _grid(len(metrics), ncols=ncols, w=max(2.8, 0.8 * len(groups) + 1.2))
        for ax, metric in zip(axes, metrics):
            for i, group in enumerate(groups):
                part = trials[trials["group"] == group]
                ok = part[(part["status"] == FINISHED) & part[metric].notna()]
                bad = part[part["status"] != FINISHED]
                values = ok[metric].to_numpy(dtype=float)
                if len(values) >= 3:
                    ax.boxplot(values, positions=[i], widths=0.45, showfliers=False, manage_ticks=False,
                               medianprops={"color": "#444"}, boxprops={"color": "#888"},
                               whiskerprops={"color": "#888"}, capprops={"color": "#888"})
                ax.plot(i + _jitter(len(values), 0.12), values, "o", color=colors[group], alpha=0.85,
                        markersize=5, label="seed (finished trial)" if i == 0 else None)
                if len(values):
                    ax.errorbar([i + 0.3], [values.mean()], yerr=[values.std(ddof=1) if len(values) > 1 else 0.0],
                                fmt="D", color="black", markersize=4, capsize=3,
                                label="mean ± sd" if i == 0 else None)
                logged = bad[bad[metric].notna()]
                ax.plot([i - 0.2] * len(logged), logged[metric].to_numpy(dtype=float), **FAILED_STYLE)
                _mark_missing(ax, [i - 0.2] * (len(bad) - len(logged)))
            ax.set_xticks(range(len(groups)), labels, fontsize=7)
            ax.set_xlabel(xlabel, fontsize=7)
            ax.set_xlim(-0.6, len(groups) - 0.3)
            ax.set_title(pretty(metric))
            if metric in reference:
                ax.axhline(reference[metric], label="untrained" if ax is axes[0] else None, **REFERENCE_STYLE)
        _failed_legend(axes[0], trials)
    return to_svg(fig, "plot-seed-spread")


def _failed_legend(ax, trials: pd.DataFrame, where: str = "best") -> None:
    n_bad = int((trials["status"] != FINISHED).sum())
    if n_bad:
        ax.plot([], [], label=f"failed / unfinished trial ({n_bad})", **FAILED_STYLE)
    ax.legend(fontsize=7, loc=where)


def knob_sweep(trials: pd.DataFrame, knob: str, metrics: list[str], others=()) -> str:
    """Per metric: every seed's value against ``knob``, and the mean ± sd line of each series."""
    t = trials[trials[knob].notna()].assign(series=lambda d: series_label(d, knob, others))
    values = knob_values(t, knob)
    numeric = all(isinstance(v, (int, float)) for v in values)
    pos = {v: (float(v) if numeric else float(i)) for i, v in enumerate(values)}
    log_x = numeric and min(values) > 0 and max(values) / min(values) >= 20
    span = (max(pos.values()) - min(pos.values())) or 1.0
    series = list(dict.fromkeys(t["series"]))
    colors = palette(series)
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(metrics), ncols=4)
        for ax, metric in zip(axes, metrics):
            for s in series:
                part = t[t["series"] == s]
                ok = part[(part["status"] == FINISHED) & part[metric].notna()]
                label = s or "seeds"
                if log_x:
                    xs = ok[knob].map(pos).to_numpy(dtype=float) * np.exp(_jitter(len(ok), 0.04))
                else:
                    xs = ok[knob].map(pos).to_numpy(dtype=float) + _jitter(len(ok), 0.015 * span)
                ax.plot(xs, ok[metric].to_numpy(dtype=float), "o", color=colors[s], alpha=0.6, markersize=4)
                stats = ok.groupby(knob, sort=True)[metric].agg(["mean", "std", "count"])
                if len(stats):
                    ax.errorbar(stats.index.map(pos), stats["mean"], yerr=stats["std"].fillna(0.0), fmt="-D",
                                color=colors[s], markersize=4, capsize=3, label=f"{label}: mean ± sd")
                bad = part[part["status"] != FINISHED]
                logged = bad[bad[metric].notna()]
                ax.plot(logged[knob].map(pos).to_numpy(dtype=float), logged[metric].to_numpy(dtype=float),
                        **FAILED_STYLE)
                _mark_missing(ax, bad[bad[metric].isna()][knob].map(pos).to_numpy(dtype=float))
            if log_x:
                ax.set_xscale("log")
            ax.set_xticks([pos[v] for v in values], [str(v) for v in values])
            ax.minorticks_off()
            ax.set_xlabel(knob)
            ax.set_title(pretty(metric))
        _failed_legend(axes[0], t)
    return to_svg(fig, f"plot-vs-{slug(knob)}")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def training_curves(curves: pd.DataFrame, metrics: list[str], reference: dict[str, float] | None = None,
                    max_points: int = 1000) -> str:
    """Per curve metric, one line per trial coloured by group; failed trials dashed and crossed at their last step.

    ``reference``: curve metric → the untrained student's value, a dotted horizontal line on that panel.
    """
    reference = reference or {}
    groups = list(dict.fromkeys(curves["group"]))
    colors = palette(groups)
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(metrics), ncols=2, w=5.0, h=3.2)
        for ax, metric in zip(axes, metrics):
            seen = set()
            for (run_id, group), part in curves[curves["metric"] == metric].groupby(["run_id", "group"], sort=False):
                if len(part) > max_points:  # beyond what a 5-inch panel can show
                    part = part.iloc[np.unique(np.linspace(0, len(part) - 1, max_points).round().astype(int))]
                failed = part["status"].iloc[0] != FINISHED
                ax.plot(part["step"], part["value"], "--" if failed else "-", color=colors[group], linewidth=1.2,
                        marker="o" if len(part) <= 30 else None, markersize=3,
                        label=None if group in seen else group)
                seen.add(group)
                if failed:
                    ax.plot(part["step"].iloc[-1:], part["value"].iloc[-1:], **FAILED_STYLE)
            if metric in reference:
                ax.axhline(reference[metric], label="untrained", **REFERENCE_STYLE)
                ax.legend(fontsize=7)
            ax.set_xlabel("step")
            ax.set_title(pretty(metric))
        _failed_legend(axes[0], curves.drop_duplicates("run_id"))
    return to_svg(fig, "plot-training-curves")


def pipeline_recall(table: pd.DataFrame) -> str:
    """Recall against depth k (log scale) for each pipeline, one panel per configuration group."""
    groups = list(dict.fromkeys(table["group"]))
    pipes = list(dict.fromkeys(table["pipeline"]))
    colors = palette(pipes)
    depths = sorted(int(c[2:]) for c in table.columns if re.fullmatch(r"R_\d+", c))
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(groups), ncols=3, w=3.8, h=3.0)
        for ax, group in zip(axes, groups):
            for row in table[table["group"] == group].itertuples(index=False):
                d = row._asdict()
                ks = [k for k in depths if pd.notna(d.get(f"R_{k}"))]
                ax.plot(ks, [d[f"R_{k}"] for k in ks], "-o", color=colors[row.pipeline], markersize=3,
                        label=row.pipeline)
            ax.set_xscale("log")
            ax.set_xticks(depths, [str(k) for k in depths])
            ax.minorticks_off()
            ax.set_xlabel("k")
            ax.set_ylabel("recall@k")
            ax.set_title(group, fontsize=8)
        axes[0].legend(fontsize=7)
    return to_svg(fig, "plot-pipeline-recall")


def latency(table: pd.DataFrame) -> str:
    """Horizontal bars of p50 and p99 latency (ms) per stage, and per pipeline total in a second panel."""
    kinds = [k for k in ("stage", "pipeline") if (table["kind"] == k).any()]
    with matplotlib.rc_context(RC):
        fig, axes = _grid(len(kinds), ncols=2, w=4.6, h=max(2.2, 0.45 * table["kind"].value_counts().max() + 1))
        for ax, kind in zip(axes, kinds):
            part = table[table["kind"] == kind].iloc[::-1]
            y = np.arange(len(part))
            p50 = part["p50_ms"].to_numpy(dtype=float)
            p99 = part["p99_ms"].to_numpy(dtype=float)
            ax.barh(y + 0.2, p50, height=0.4, color="#1f77b4", label="p50")
            ax.barh(y - 0.2, p99, height=0.4, color="#ff7f0e", label="p99")
            ax.set_yticks(y, part["stage"].tolist())
            finite = np.concatenate([p50, p99])
            finite = finite[np.isfinite(finite) & (finite > 0)]
            if len(finite) and finite.max() / finite.min() >= 50:
                ax.set_xscale("log")
            ax.set_xlabel("ms (mean over finished trials)")
            ax.set_title("stages" if kind == "stage" else "pipelines (end to end)")
            ax.grid(axis="y", visible=False)
        axes[0].legend(fontsize=7)
    return to_svg(fig, "plot-latency")
