"""Plan statistics and cluster quality for several cluster counts k: how to choose k for a dataset (issue 14).

    python benchmarks/plan_stats.py experiments/configs/nfcorpus.yaml --k 4 8 12 16 24 32
        [--samplings tas-balanced tas-authors random] [--set key=value ...] [--out FILE.json]

Needs no teacher when the pairs stage is not cached: the training queries and their pairs then come from the
BM25 candidates and qrels (:func:`tasb_ray.training.pairs.build_triples` with the config's settings) with zero
scores, which leaves the composition statistics exact (they do not read scores) and the margin-bin ones
meaningless (reported as null). Queries are encoded once with the clusters stage's encoder; each k is one
k-means (the clusters stage's seed and iterations) plus the quality measures. The plan is the run's: its number of
batches is the config's total steps.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tasb_ray.config import load_config
from tasb_ray.distributed.batch_encoder import encode_bucketed
from tasb_ray.pipeline.cache import StageNotPrepared
from tasb_ray.pipeline.context import open_data, student_encoder
from tasb_ray.pipeline.pairs import pairs_stage
from tasb_ray.schema import QUERY_ID, TEXT
from tasb_ray.training.candidates import first_stage_candidates
from tasb_ray.training.clusters import cluster_quality, cluster_queries, cluster_stats
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.pairs import build_triples, read_pairs
from tasb_ray.training.sampling import BatchSampler, plan_statistics
from tasb_ray.training.trainer import total_steps


def training_pairs(cfg: TrainingConfig, ds) -> tuple[object, bool]:
    """The pairs stage's table when cached (True), else the unscored triples with zero scores (False)."""
    try:
        d, _ = pairs_stage(cfg, ds, require_cached=True)
        return read_pairs(d / "pairs.parquet"), True
    except StageNotPrepared:
        c = cfg.candidates
        cands = first_stage_candidates(ds, cfg.data.train_split, c.sources, c.depth)
        t = build_triples(cands, ds.qrels(cfg.data.train_split), c.negatives_per_query, c.seed, c.max_positives,
                          positive_grade=c.positive_grade, max_pairs_per_query=c.max_pairs_per_query)
        return t.assign(pos_score=0.0, neg_score=0.0), False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--k", type=int, nargs="+", required=True)
    ap.add_argument("--samplings", nargs="+", default=["tas-balanced", "tas-authors", "random"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out")
    args = ap.parse_args()
    cfg = load_config(TrainingConfig, args.config, args.overrides + ["progress=false"])
    t0 = time.perf_counter()
    ds = open_data(cfg)
    pairs, scored = training_pairs(cfg, ds)
    queries = ds.queries(cfg.data.train_split)
    encoder = student_encoder(cfg.clusters.encoder or cfg.student.model, cfg)
    with torch.inference_mode():
        vectors = encode_bucketed(encoder, queries[TEXT].tolist(), "query")
    qids = queries[QUERY_ID].astype(str).tolist()
    result = {"config": args.config, "overrides": args.overrides, "scored_pairs": scored,
              "training_queries": int(pairs["qid"].nunique()), "pairs": len(pairs), "k": {}}
    for k in args.k:
        assignment = cluster_queries(qids, vectors, k, cfg.clusters.seed, niter=cfg.clusters.niter)
        entry = {"clusters": cluster_stats(assignment, k),
                 "quality": cluster_quality(vectors, assignment, cfg.clusters.seed, cfg.clusters.niter)}
        for sampling in args.samplings:
            sc = type(cfg.sampler)(**{**cfg.sampler.__dict__, "sampling": sampling})
            sampler = BatchSampler(pairs, sc, assignment)
            stats = plan_statistics(sampler, total_steps(cfg, sampler.batches_per_epoch) * cfg.optim.grad_accum)
            if not scored:
                for key in ("bin_hist", "bin_hist_balanced", "bin_tv"):
                    stats[key] = None
            entry[sampling] = stats
        result["k"][k] = entry
        print(k, json.dumps({s: entry[s].get("single_cluster_batch_share") for s in args.samplings}),
              entry["quality"], flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=1, default=lambda v: v.item() if isinstance(v, np.generic) else str(v))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
