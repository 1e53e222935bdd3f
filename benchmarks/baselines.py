"""Reproduce the published BM25 and all-MiniLM-L6-v2 baselines on the BEIR test splits.

    python benchmarks/baselines.py [--datasets scifact nfcorpus] [--out benchmarks/results/baselines.md]

Dense: mean pooling, L2-normalised, title + " " + text, max length 256 (the model's own settings,
as MTEB evaluates it). BM25: bm25s Lucene, k1 0.9, b 0.4, English stopwords and Snowball stemming.
Metrics: ir-measures, relevance binarised at 1 for MRR and recall.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from tasb_ray.data import prepare_dataset
from tasb_ray.evaluation.metrics import DEFAULT_METRICS
from tasb_ray.evaluation.first_stage import DenseOptions, retrieve
from tasb_ray.fileio import write_json, write_text

PUBLISHED = {("scifact", "dense"): 0.6451, ("nfcorpus", "dense"): 0.3159}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["scifact", "nfcorpus"])
    ap.add_argument("--split", default="test")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--out", default="benchmarks/results/baselines.md")
    args = ap.parse_args()

    rows = []
    for name in args.datasets:
        ds = prepare_dataset(name)
        for retriever in ("bm25", "dense"):
            t = time.perf_counter()
            res = retrieve(ds, args.split, retriever, dense=DenseOptions(model=args.model, passage_max_len=256,
                                                                        query_max_len=256))
            rows.append({"dataset": name, "retriever": retriever, **res.metrics, "seconds": time.perf_counter() - t,
                         "published_nDCG@10": PUBLISHED.get((name, retriever))})
            print(json.dumps(rows[-1]), flush=True)

    machine = f"{platform.node() or 'host'}: {platform.processor() or platform.machine()}, " \
              f"{__import__('os').cpu_count()} cores, no GPU"
    lines = [f"Command: `python benchmarks/baselines.py --datasets {' '.join(args.datasets)}` "
             f"(split {args.split}; machine: {machine})", "",
             "| dataset | retriever | " + " | ".join(DEFAULT_METRICS) + " | published nDCG@10 |",
             "|---|---|" + "---|" * (len(DEFAULT_METRICS) + 1)]
    for r in rows:
        pub = f"{r['published_nDCG@10']:.4f}" if r["published_nDCG@10"] else "-"
        lines.append(f"| {r['dataset']} | {r['retriever']} | " + " | ".join(f"{r[m]:.4f}" for m in DEFAULT_METRICS)
                     + f" | {pub} |")
    write_text(args.out, "\n".join(lines) + "\n")
    write_json(Path(args.out).with_suffix(".json"), rows)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
