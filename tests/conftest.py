"""Shared fixtures: a tiny random BERT (MiniLM tokenizer) and a tiny BEIR dataset. No network, no real weights."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    import torch

    # Tiny models gain nothing from a second thread, and two OpenMP threads on 2 busy cores
    # (a Ray worker, a benchmark) run ~30x slower than one: measured 2.8 s vs 0.08 s per tiny step.
    torch.set_num_threads(1)

TOPICS = {
    "cardio": ["heart", "artery", "cholesterol", "blood pressure", "statin"],
    "onco": ["tumor", "cancer", "chemotherapy", "metastasis", "oncogene"],
    "neuro": ["neuron", "brain", "synapse", "dopamine", "cortex"],
    "micro": ["bacteria", "antibiotic", "microbiome", "pathogen", "virus"],
}


def write_beir(root: Path, docs_per_topic: int = 8, queries_per_topic: int = 6, with_dev: bool = False) -> Path:
    """A small BEIR directory whose queries share topic words with their relevant documents."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    docs, queries, qrels = [], [], {"train": [], "test": [], "dev": []}
    for t, (topic, words) in enumerate(TOPICS.items()):
        for i in range(docs_per_topic):
            w = words[i % len(words)]
            docs.append({"_id": f"d{topic}{i}", "title": f"{w.title()} study {i}",
                         "text": f"We report on {w} and {words[(i + 1) % len(words)]} in {topic} research, case {i}."})
        for j in range(queries_per_topic):
            qid = f"q{t}{j}"
            w = words[j % len(words)]
            queries.append({"_id": qid, "text": f"what is known about {w} in {topic}", "metadata": {"secret": qid}})
            split = "test" if j == 0 else ("dev" if with_dev and j == 1 else "train")
            for i in (j % docs_per_topic, (j + 1) % docs_per_topic):
                qrels[split].append((qid, f"d{topic}{i}", 1 + (i % 2)))
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    for split, rows in qrels.items():
        if rows:
            (root / "qrels" / f"{split}.tsv").write_text(
                "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in rows))
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tasb_ray.models.tiny import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture()
def tiny_beir(tmp_path) -> Path:
    return write_beir(tmp_path / "tinybeir")


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("TASB_RAY_CACHE", str(d))
    return d
