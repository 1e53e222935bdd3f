"""Read the report's tables back out of HTML (the file, or the DOM a browser dumped) with the stdlib parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Cell:
    text: str
    value: str | None  # the exact number in data-value, when the cell is numeric


@dataclass
class Row:
    attrs: dict
    cells: dict[str, Cell] = field(default_factory=dict)  # by the column's data-key


@dataclass
class ParsedTable:
    keys: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def column(self, key: str) -> list[Cell]:
        return [r.cells[key] for r in self.rows]


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tables: dict[str, ParsedTable] = {}
        self.ids: dict[str, str] = {}  # element id -> tag
        self.table: ParsedTable | None = None
        self.row: Row | None = None
        self.cell: list | None = None
        self.col = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "table":
            self.table = self.tables.setdefault(a.get("id", f"anon-{len(self.tables)}"), ParsedTable())
        elif self.table is None:
            return
        elif tag == "th":
            self.table.keys.append(a.get("data-key", ""))
        elif tag == "tr":
            self.row, self.col = Row(a), 0
        elif tag == "td":
            self.cell = [a.get("data-value"), ""]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if self.table is None:
            return
        if tag == "td" and self.cell is not None and self.row is not None:
            self.row.cells[self.table.keys[self.col]] = Cell(self.cell[1].strip(), self.cell[0])
            self.col += 1
            self.cell = None
        elif tag == "tr" and self.row is not None:
            if self.row.cells:
                self.table.rows.append(self.row)
            self.row = None
        elif tag == "table":
            self.table = None


def parse(html: str) -> tuple[dict[str, ParsedTable], dict[str, str]]:
    """The tables by id, and every element id with its tag."""
    p = _Parser()
    p.feed(html)
    return p.tables, p.ids
