"""Retrieve for one split with BM25 or a dense encoder, print the metrics table, and write the TREC run file.

Metrics come from ir-measures: nDCG@10 on graded judgements; MRR@10 and recall binarised at
--rel-level (1 for BEIR, 2 for TREC-DL). Queries without results count as 0.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasb_ray.commands.common import add_dataset_arguments, add_encoder_arguments, open_dataset
from tasb_ray.data.trec import write_trec_run
from tasb_ray.evaluation.first_stage import DenseOptions, default_run_path, retrieve
from tasb_ray.evaluation.metrics import DEFAULT_METRICS, format_table
from tasb_ray.fileio import write_json
from tasb_ray.retrieval.bm25 import BM25Params
from tasb_ray.retrieval.dense import INDEX_KINDS

HELP = "run BM25 or dense retrieval on a split and report nDCG@10, MRR@10, R@100, R@1000"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="directory, name on the search path, or irds:ID")
    p.add_argument("--split", default="test", help="qrels split to evaluate (dev for model choices, test to report)")
    p.add_argument("--retriever", choices=["bm25", "dense"], default="dense", help="first-stage retriever")
    p.add_argument("--k", type=int, default=1000, help="results per query")
    p.add_argument("--rel-level", type=int, default=1, help="minimum grade counted relevant for MRR and recall")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="ir-measures style names")
    p.add_argument("--out", default=None, help="TREC run file to write (default: runs/DATASET.SPLIT.RETRIEVER.trec); "
                   "metrics go beside it as .metrics.json")
    add_dataset_arguments(p)
    add_encoder_arguments(p)
    g = p.add_argument_group("dense index")
    g.add_argument("--index", default=None, help="load this saved dense index (from encode-corpus) instead of encoding")
    g.add_argument("--save-index", default=None, help="save the dense index built here to this directory")
    g.add_argument("--index-kind", choices=list(INDEX_KINDS), default="flat", help="faiss index type")
    g = p.add_argument_group("bm25")
    g.add_argument("--k1", type=float, default=0.9, help="BM25 k1")
    g.add_argument("--b", type=float, default=0.4, help="BM25 b")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what would otherwise fail after retrieval (or, for --k 0, succeed with an empty run)."""
    from tasb_ray.errors import ConfigError
    from tasb_ray.evaluation.metrics import check_metric_names

    if args.k < 1:
        raise ConfigError(f"--k: must be an integer >= 1, got {args.k}")
    check_metric_names(args.metrics)


def check_out(out: Path, what: str) -> None:
    from tasb_ray.errors import ConfigError

    for path in (out, out.with_suffix(".metrics.json")):
        if path.is_dir():
            raise ConfigError(f"{what} {path}: is a directory, expected a file path")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"{what} {out}: {parent} is not a directory")


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    ds = open_dataset(args.dataset, args)
    out = Path(args.out) if args.out else default_run_path(ds.name, args.split, args.retriever, args.model)
    check_out(out, "--out" if args.out else "run file")
    dense = DenseOptions(model=args.model, pooling=args.pooling, normalize=args.normalize,
                         query_max_len=args.query_max_len, passage_max_len=args.passage_max_len,
                         batch_size=args.batch_size, device=args.device, index=args.index,
                         save_index=args.save_index, index_kind=args.index_kind)
    result = retrieve(ds, args.split, args.retriever, k=args.k, dense=dense, bm25=BM25Params(k1=args.k1, b=args.b),
                      metrics=args.metrics, rel_level=args.rel_level)
    write_trec_run(result.run, out, tag=f"tasb-ray-{args.retriever}")
    write_json(out.with_suffix(".metrics.json"), {"metrics": result.metrics, "timings": result.timings,
                                                  **result.info})
    label = args.retriever if args.retriever == "bm25" else f"dense {Path(str(args.model)).name}"
    print(format_table({f"{ds.name}/{args.split} {label}": result.metrics}, args.metrics))
    print(f"run: {out}  ({result.info['queries']} queries; index {result.timings['index_s']:.1f}s, "
          f"search {result.timings['search_s']:.1f}s)")
    return 0
