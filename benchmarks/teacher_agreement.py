"""A training config's pairwise teacher as a re-ranker of BM25's top candidates on dev: its agreement with the qrels.

    python benchmarks/teacher_agreement.py experiments/configs/nfcorpus.yaml [--split dev] [--depth 100]
        [--set key=value ...]

Uses the run's own teacher with the vectors of its cached teacher-vectors stage (every query of every split and
the whole corpus are in it), so nothing is encoded. Prints nDCG@10, MRR@10 and R@100 of BM25 alone and of the
teacher re-ranking BM25's top ``--depth``, at the config's ``data.rel_level``.
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from tasb_ray.config import load_config
from tasb_ray.evaluation.metrics import evaluate
from tasb_ray.pipeline.context import open_data, work_dir
from tasb_ray.pipeline.teacher_vectors import attach_teacher_vectors
from tasb_ray.schema import DOC_ID, QUERY_ID, SCORE
from tasb_ray.teachers import build_teacher
from tasb_ray.training.candidates import first_stage_candidates
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.pairs import score_pairs

METRICS = ["nDCG@10", "MRR@10", "R@100"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    cfg = load_config(TrainingConfig, args.config, args.overrides + ["progress=false"])
    t0 = time.perf_counter()
    ds = open_data(cfg)
    corpus, queries = ds.corpus(), ds.queries(args.split)
    cands = first_stage_candidates(ds, args.split, ["bm25"], args.depth)
    teacher = build_teacher(cfg.teachers.pairwise, corpus=corpus)
    attach_teacher_vectors(teacher, cfg.teachers.pairwise, ds, work_dir(cfg), require_cached=True,
                           vector_dtype=cfg.teachers.vector_dtype)
    scored = score_pairs(cands[["qid", "pid"]], queries, corpus, teacher)
    qrels = ds.qrels(args.split)
    bm25 = pd.DataFrame({QUERY_ID: cands["qid"], DOC_ID: cands["pid"], SCORE: -cands["rank"].astype(float)})
    teacher_run = scored.rename(columns={"qid": QUERY_ID, "pid": DOC_ID, "score": SCORE})
    out = {"split": args.split, "queries": int(queries.shape[0]), "depth": args.depth,
           "bm25": evaluate(bm25, qrels, METRICS, cfg.data.rel_level),
           "teacher": evaluate(teacher_run, qrels, METRICS, cfg.data.rel_level),
           "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
