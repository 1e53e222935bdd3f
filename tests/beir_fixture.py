"""A tiny BEIR directory builder for tests (plain module, importable from any test file)."""

from __future__ import annotations

import json
from pathlib import Path

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
