"""Assemble the report as one self-contained HTML page: inline CSS, inline SVG, no scripts, no remote loads.

Every plot is a ``<figure id="plot-...">`` and every table a ``<table id="table-...">``, so tests and
readers can address them. Numeric cells carry the exact value in ``data-value`` (the text is rounded);
column headers carry the MLflow metric key in ``data-key``. A Content-Security-Policy forbids any
network access, so a page that tried to load something would show it as a console error.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; font-size: .9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption, caption { font-size: .85em; color: #555; text-align: left; padding: .3em 0; }
table { border-collapse: collapse; font-size: .8em; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .15em .5em; } th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } td.na { color: #aaa; text-align: center; }
tr.failed td { background: #fdecea; } td.status-FAILED { color: #b00; font-weight: 600; }
p.note { background: #fff8e1; border-left: 3px solid #f0b400; padding: .4em .8em; font-size: .9em; }
details summary { cursor: pointer; font-size: .85em; color: #555; }
"""


@dataclass
class Table:
    """A frame rendered as ``<table id=...>``.

    Args:
        id: element id (``table-...``).
        frame: the data; a ``run_id`` column becomes a ``data-run-id`` row attribute, and rows whose
            ``status`` is not FINISHED get the ``failed`` class.
        caption: what the table shows.
        digits: decimals per column (default 4 for floats); None prints the shortest form (knob values).
        collapsed: wrap in ``<details>`` (long tables).
    """

    id: str
    frame: pd.DataFrame
    caption: str
    digits: dict[str, int | None] = field(default_factory=dict)
    collapsed: bool = False


@dataclass
class Plot:
    """Args:
        id: element id of the ``<figure>`` (``plot-...``).
        svg: the inline ``<svg>`` element.
        caption: what the plot shows.
    """

    id: str
    svg: str
    caption: str


@dataclass
class Section:
    """Args:
        id: element id of the ``<section>``.
        title: heading.
        intro: a sentence above the content (plain text).
        plots, tables: content in order.
        notes: why something is missing (plain text); rendered as ``<p class="note">``.
    """

    id: str
    title: str
    intro: str = ""
    plots: list[Plot] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def header_label(column: str) -> str:
    """MLflow keys use ``_`` for ``@``: ``final_test/nDCG_10`` → ``final_test/nDCG@10`` for display."""
    for m in ("nDCG_", "MRR_", "R_"):
        head, sep, tail = column.rpartition(m)
        if sep and tail.isdigit() and (not head or head.endswith("/")):
            return f"{head}{m[:-1]}@{tail}"
    return column


def _cell(value, digits: int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return '<td class="na">–</td>'
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{value}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td class="num" data-value="{int(value)}">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        v = float(value)
        text = f"{v:g}" if digits is None else f"{v:.{digits}f}"
        return f'<td class="num" data-value="{v!r}">{text}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def render_table(t: Table) -> str:
    df = t.frame
    cols = [c for c in df.columns if c != "run_id"]
    head = "".join(f'<th data-key="{html.escape(str(c))}">{html.escape(header_label(str(c)))}</th>' for c in cols)
    rows = []
    for rec in df.to_dict("records"):
        attrs = ""
        if "run_id" in rec:
            attrs += f' data-run-id="{html.escape(str(rec["run_id"]))}"'
        status = rec.get("status")
        if status is not None and status != "FINISHED":
            attrs += ' class="failed"'
        cells = []
        for c in cols:
            value = rec[c]
            if c == "status":
                cells.append(f'<td class="status-{html.escape(str(value))}">{html.escape(str(value))}</td>')
            else:
                cells.append(_cell(value, t.digits.get(c, 4)))
        rows.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    table = (f'<table id="{html.escape(t.id)}"><caption>{html.escape(t.caption)}</caption>'
             f"<thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>")
    if t.collapsed:
        return f"<details><summary>{html.escape(t.caption)} [{len(df)} rows; click to show]</summary>{table}</details>"
    return table


def render_section(s: Section) -> str:
    parts = [f'<section id="{html.escape(s.id)}"><h2>{html.escape(s.title)}</h2>']
    if s.intro:
        parts.append(f"<p>{html.escape(s.intro)}</p>")
    for i, note in enumerate(s.notes):
        parts.append(f'<p class="note" id="note-{html.escape(s.id.removeprefix("sec-"))}-{i}">{html.escape(note)}</p>')
    for p in s.plots:
        parts.append(f'<figure id="{html.escape(p.id)}">{p.svg}<figcaption>{html.escape(p.caption)}</figcaption></figure>')
    parts.extend(render_table(t) for t in s.tables)
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, meta: list[tuple[str, str]], sections: list[Section],
                lead: list[Section] = ()) -> str:
    """The whole document.

    Args:
        title: page title and heading.
        meta: ``(label, value)`` pairs listed under the heading.
        sections: in order.
        lead: sections above the metadata (the answer comes before how it was obtained).
    """
    meta_html = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in meta)
    toc = "".join(f'<li><a href="#{html.escape(s.id)}">{html.escape(s.title)}</a></li>' for s in [*lead, *sections])
    body = "\n".join(render_section(s) for s in sections)
    lead_html = "".join(render_section(s) + "\n" for s in lead)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
            f'<h1>{html.escape(title)}</h1>\n{lead_html}<dl class="meta">{meta_html}</dl>\n<nav><ul>{toc}</ul></nav>\n'
            f"{body}\n</body></html>\n")
