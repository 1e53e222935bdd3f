"""Tiny on-disk dataset builders for the data-layer tests (everything lives in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def _write(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _jsonl(rows) -> list[str]:
    return [r if isinstance(r, str) else json.dumps(r) for r in rows]


def default_beir_rows(n_train: int = 20, n_test: int = 4, n_docs: int = 30):
    corpus = [{"_id": f"d{i}", "title": f"Title {i}" if i % 2 == 0 else "", "text": f"passage number {i}"}
              for i in range(n_docs)]
    queries = [{"_id": f"q{i}", "text": f"train query {i}", "metadata": {"answer": f"d{i}"}} for i in range(n_train)]
    queries += [{"_id": f"t{i}", "text": f"test query {i}", "metadata": {}} for i in range(n_test)]
    train = [(f"q{i}", f"d{i % n_docs}", 1) for i in range(n_train)]
    train += [(f"q{i}", f"d{(i + 7) % n_docs}", 2) for i in range(0, n_train, 3)]
    test = [(f"t{i}", f"d{(i + 3) % n_docs}", 1) for i in range(n_test)]
    return corpus, queries, {"train": train, "test": test}


@pytest.fixture
def write_lines():
    """``write_lines(path, ["line", ...])`` writes the lines, each ending in a newline."""
    return _write


@pytest.fixture
def make_beir(tmp_path):
    """Build a BEIR directory. Rows may be dicts (dumped as JSON) or raw strings (written as-is).

    ``qrels`` maps split -> list of (qid, did, score) tuples or raw strings; a header line is added.
    """

    def make(name: str = "tinybeir", corpus=None, queries=None, qrels=None, root: Path | None = None) -> Path:
        d_corpus, d_queries, d_qrels = default_beir_rows()
        root = (root or tmp_path) / name
        _write(root / "corpus.jsonl", _jsonl(d_corpus if corpus is None else corpus))
        _write(root / "queries.jsonl", _jsonl(d_queries if queries is None else queries))
        for split, rows in (d_qrels if qrels is None else qrels).items():
            lines = ["query-id\tcorpus-id\tscore"]
            lines += [r if isinstance(r, str) else "\t".join(map(str, r)) for r in rows]
            _write(root / "qrels" / f"{split}.tsv", lines)
        return root

    return make


@pytest.fixture
def make_msmarco(tmp_path):
    """Build an MS MARCO style directory: collection.tsv, queries.<split>.tsv, qrels.<split>.tsv (TREC format)."""

    def make(name: str = "tinymarco", collection=None, queries=None, qrels=None, qrels_ext: str = "tsv") -> Path:
        root = tmp_path / name
        collection = collection if collection is not None else [(str(i), f"passage {i} text") for i in range(12)]
        queries = queries if queries is not None else {
            "train": [(str(100 + i), f"train question {i}") for i in range(8)],
            "dev": [(str(200 + i), f"dev question {i}") for i in range(2)],
        }
        qrels = qrels if qrels is not None else {
            "train": [(str(100 + i), str(i), 1) for i in range(8)],
            "dev": [(str(200 + i), str(8 + i), 1) for i in range(2)],
        }
        _write(root / "collection.tsv", [r if isinstance(r, str) else "\t".join(r) for r in collection])
        for split, rows in queries.items():
            _write(root / f"queries.{split}.tsv", [r if isinstance(r, str) else "\t".join(r) for r in rows])
        for split, rows in qrels.items():
            _write(root / f"qrels.{split}.{qrels_ext}",
                   [r if isinstance(r, str) else f"{r[0]}\t0\t{r[1]}\t{r[2]}" for r in rows])
        return root

    return make
