"""Each teacher as a re-ranker of BM25's top-100 on a BEIR split: how good a signal is it?

    python benchmarks/teachers.py [--dataset scifact] [--split dev|test] [--depth 100] [--model minilm-l6]

Teachers (all through ``tasb_ray.teachers``):

* ``bm25``: the BM25 teacher (its pair scores reproduce the first stage's scores, checked here);
* ``bi-encoder``: all-MiniLM-L6-v2, cosine (its own mean pooling);
* ``colbert``: MaxSim over the L2-normalised MiniLM token vectors (no projection: plain-encoder mode);
* ``ensemble(a + b)``: per-query z-normalised scores, equal weights.

Each base teacher scores the candidates once; the ensembles combine those scores through
``EnsembleTeacher`` over ``FileTeacher`` components holding them (the same code path as an ensemble of
live teachers, without encoding the corpus twice). One ``score_batch`` call per teacher holds every
candidate of a query, as the ensemble contract requires.

Writes ``benchmarks/results/teachers_<dataset>_<split>.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time

import numpy as np
import pandas as pd

from tasb_ray.data import prepare_dataset
from tasb_ray.evaluation.metrics import evaluate
from tasb_ray.fileio import write_text
from tasb_ray.retrieval.bm25 import BM25Index, BM25Params
from tasb_ray.schema import DOC_ID, QUERY_ID, SCORE, TEXT
from tasb_ray.teachers import TeacherConfig, build_teacher
from tasb_ray.teachers.ensemble import EnsembleTeacher
from tasb_ray.teachers.precomputed import FileTeacher

METRICS = ("nDCG@10", "MRR@10")


def candidates(ds, split: str, depth: int) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """BM25 top-``depth`` as a pairs frame (qid, pid, query, passage, bm25), its run, and build seconds."""
    t = time.perf_counter()
    corpus, queries = ds.corpus(), ds.queries(split)
    index = BM25Index(corpus[DOC_ID].to_numpy(), corpus[TEXT].tolist(), BM25Params())
    run = index.search(queries[QUERY_ID].tolist(), queries[TEXT].tolist(), k=depth)
    qtext = dict(zip(queries[QUERY_ID], queries[TEXT]))
    dtext = dict(zip(corpus[DOC_ID], corpus[TEXT]))
    pairs = pd.DataFrame({"qid": run[QUERY_ID], "pid": run[DOC_ID], "query": run[QUERY_ID].map(qtext),
                          "passage": run[DOC_ID].map(dtext), "bm25": run[SCORE]})
    return pairs, run, time.perf_counter() - t


def as_run(pairs: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({QUERY_ID: pairs["qid"], DOC_ID: pairs["pid"], SCORE: np.asarray(scores, dtype=float)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--split", default="dev")
    ap.add_argument("--depth", type=int, default=100, help="BM25 candidates re-ranked per query")
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--max-query-len", type=int, default=128, help="no SciFact claim is cut (longest: 79 tokens)")
    ap.add_argument("--max-passage-len", type=int, default=256, help="MiniLM's own maximum")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="default benchmarks/results/teachers_<dataset>_<split>.md")
    args = ap.parse_args()
    out = args.out or f"benchmarks/results/teachers_{os.path.basename(args.dataset)}_{args.split}.md"

    ds = prepare_dataset(args.dataset, log=lambda s: print(s, flush=True))
    qrels = ds.qrels(args.split)
    pairs, first_stage, bm25_s = candidates(ds, args.split, args.depth)
    recall = evaluate(first_stage, qrels, [f"R@{args.depth}"])[f"R@{args.depth}"]
    print(f"{pairs.qid.nunique()} queries, {len(pairs)} candidates, {pairs.pid.nunique()} distinct passages, "
          f"BM25 R@{args.depth} {recall:.4f}", flush=True)

    common = dict(model=args.model, max_query_len=args.max_query_len, max_passage_len=args.max_passage_len,
                  batch_size=args.batch_size)
    configs = {
        "bm25": TeacherConfig(kind="bm25"),
        "bi-encoder": TeacherConfig(kind="bi-encoder", similarity="cosine", **common),
        "colbert": TeacherConfig(kind="colbert", **common),
    }
    corpus = ds.corpus()
    scores: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name, cfg in configs.items():
        t = time.perf_counter()
        teacher = build_teacher(cfg, corpus)
        scores[name] = np.asarray(teacher.score_batch(pairs), dtype=np.float64)
        seconds[name] = time.perf_counter() - t
        del teacher
        print(f"{name}: {seconds[name]:.0f} s", flush=True)
    drift = float(np.max(np.abs(scores["bm25"] - pairs["bm25"].to_numpy())))
    print(f"bm25 teacher vs first-stage scores: max |diff| {drift:.2e}", flush=True)

    for a, b in (("bm25", "bi-encoder"), ("bm25", "colbert")):
        t = time.perf_counter()
        members = [FileTeacher(scores=as_run(pairs, scores[m]).set_axis(["qid", "pid", "score"], axis=1))
                   for m in (a, b)]
        name = f"ensemble({a} + {b})"
        scores[name] = EnsembleTeacher(members, [1.0, 1.0]).score_batch(pairs)
        seconds[name] = seconds[a] + seconds[b] + time.perf_counter() - t

    rows = {name: evaluate(as_run(pairs, s), qrels, METRICS) for name, s in scores.items()}
    rows = {"bm25 (first stage)": evaluate(first_stage, qrels, METRICS), **rows}
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU"
    lines = [f"Command: `{command}`", "",
             f"Dataset {ds.name}, split {args.split}: {pairs.qid.nunique()} queries; BM25 (bm25s Lucene, k1 0.9, "
             f"b 0.4) top-{args.depth} re-ranked ({len(pairs)} pairs, BM25 R@{args.depth} {recall:.4f}). "
             f"Model {args.model}, query/passage max {args.max_query_len}/{args.max_passage_len} tokens. "
             f"Machine: {machine}. Seconds include model loading; an ensemble's are its members' plus combining.",
             "", "| teacher | " + " | ".join(METRICS) + " | seconds |", "|---|" + "---|" * (len(METRICS) + 1)]
    for name, vals in rows.items():
        sec = f"{seconds[name]:.0f}" if name in seconds else f"{bm25_s:.0f}"
        lines.append(f"| {name} | " + " | ".join(f"{vals[m]:.4f}" for m in METRICS) + f" | {sec} |")
    lines += ["", f"BM25 teacher vs first-stage BM25 scores: max |diff| {drift:.1e}."]
    write_text(out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
