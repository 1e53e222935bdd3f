"""Recall loss of the memory-saving indexes against exact flat search, on SciFact and NFCorpus (issue 13, item 3).

    python benchmarks/index_choice.py [--dataset scifact=PREPARED_OR_RAW_DIR ...] [--work DIR ...]
                                      [--out benchmarks/results/index_choice.md]

Vectors: all-MiniLM-L6-v2 (``minilm-l6``, cosine: normalised) of the corpus and the test queries, taken from a cached
``teacher-vectors`` stage in one of the ``--work`` directories when one matches the dataset (read only), else
encoded once into ``--scratch``. Per dataset and index (:mod:`tasb_ray.retrieval.ann`, faiss's index factory):
test nDCG@10 and R@100 (ir-measures, rel_level 1), overlap@100 (the share of flat's top 100 that the index also
returns in its top 100, averaged over queries), index bytes (serialised), build and search seconds (all test
queries in one batch, k = 1000). IVF-PQ is run at its corpus-scaled default and at a few other ``nprobe`` values,
and with codes half the size (``d / 4`` bytes), to show what the default trades.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = ["scifact=/work/shared/data/scifact", "nfcorpus=/work/shared/data/nfcorpus"]
DEFAULT_WORK = ["/tmp/quick2/work", "/work/nf/work"]
K = 1000


def _vectors(data: str, work_dirs: list[str], scratch: Path):
    """(prepared dataset, stage dir, where the vectors came from). ``data``: a prepared dataset directory (opened
    read only) or a raw dataset path (prepared into ``scratch``)."""
    from tasb_ray.data.prepare import PreparedDataset, prepare_dataset
    from tasb_ray.errors import TasbRayError
    from tasb_ray.pipeline.teacher_vectors import teacher_vectors_stage
    from tasb_ray.teachers.config import TeacherConfig

    cfg = TeacherConfig(kind="bi-encoder", model="minilm-l6", similarity="cosine", max_passage_len=256)
    if (Path(data) / "manifest.json").is_file():
        ds = PreparedDataset.open(data)
    else:
        ds = prepare_dataset(data, cache_dir=scratch / "cache")
    for work in work_dirs:
        try:
            return ds, teacher_vectors_stage(cfg, ds, work, require_cached=True), f"the cached stage in {work}"
        except TasbRayError:
            continue
    return ds, teacher_vectors_stage(cfg, ds, scratch, show_progress=True), f"encoded here into {scratch}"


def _search(index, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    t = time.perf_counter()
    scores, ids = index.search(q, K)
    return scores, ids, time.perf_counter() - t


def _overlap(flat_ids: np.ndarray, ids: np.ndarray, k: int = 100) -> float:
    return float(np.mean([len(np.intersect1d(a[:k], b[:k][b[:k] >= 0])) / k for a, b in zip(flat_ids, ids)]))


def run_dataset(name: str, ds, stage: Path) -> tuple[list[dict], dict]:
    from tasb_ray.evaluation.metrics import evaluate
    from tasb_ray.pipeline.teacher_vectors import stage_vectors
    from tasb_ray.retrieval.ann import build_index, index_bytes, resolve_index
    from tasb_ray.retrieval.runs import topk_to_run
    from tasb_ray.schema import QUERY_ID

    doc_ids, p = stage_vectors(stage, "passage")
    qids_all, qv = stage_vectors(stage, "query")
    test = ds.queries("test")
    pos = {q: i for i, q in enumerate(qids_all)}
    qids = [q for q in test[QUERY_ID].astype(str) if q in pos]
    q = np.ascontiguousarray(qv[[pos[x] for x in qids]])
    qrels = ds.qrels("test")
    rows, dim = p.shape
    default_ivf = resolve_index("ivf-pq", rows, dim)
    nlist = int(default_ivf.factory.split(",")[0][3:])
    configs = [("flat", resolve_index("flat", rows, dim)), ("hnsw-fp16", resolve_index("hnsw-fp16", rows, dim)),
               ("ivf-pq (default)", default_ivf)]
    for probe in sorted({1, max(1, nlist // 16), max(1, nlist // 8), nlist} - {default_ivf.nprobe}):
        configs.append((f"ivf-pq nprobe={probe}", resolve_index("ivf-pq", rows, dim, nprobe=probe)))
    # The half-size codes (d / 4 bytes) that the default's d / 2 was chosen over.
    ivf, pq = default_ivf.factory.split(",")
    quarter = f"{ivf},PQ{int(pq[2:].split('x')[0]) // 2}x{pq.split('x')[1]}"
    for probe in (default_ivf.nprobe, nlist):
        configs.append((f"ivf-pq d/4 bytes, nprobe={probe}",
                        dataclasses.replace(default_ivf, factory=quarter, nprobe=probe)))
    out, flat_ids = [], None
    for label, params in configs:
        t = time.perf_counter()
        index = build_index(params, p)
        build_s = time.perf_counter() - t
        scores, ids, search_s = _search(index, q)
        if flat_ids is None:
            flat_ids = ids
        run = topk_to_run(qids, np.asarray(doc_ids, dtype=object), ids, scores)
        m = evaluate(run, qrels, ["nDCG@10", "R@100"], 1)
        out.append({"index": label, "factory": params.factory, "nprobe": params.nprobe, "nDCG@10": m["nDCG@10"],
                    "R@100": m["R@100"], "overlap@100": _overlap(flat_ids, ids), "bytes": index_bytes(index),
                    "build_s": build_s, "search_s": search_s})
    return out, {"passages": rows, "dim": dim, "test_queries": len(qids), "nlist": nlist}


def to_markdown(results: dict, args, machine: str, load: tuple) -> str:
    lines = ["# Index choice: recall loss of IVF-PQ and HNSW-fp16 against exact flat search", "",
             f"Command: `nice -n 10 python benchmarks/index_choice.py {' '.join(args.argv)}`".rstrip() + "  ",
             f"Machine: {machine}; shared with a CPU experiment (load average before: "
             f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}), so times are indicative only  ",
             f"faiss {args.faiss_version}, {args.threads} OpenMP thread(s); k = {K} for every search; "
             "test split, rel_level 1.", ""]
    for name, (rows, info, source) in results.items():
        lines += [f"## {name}: {info['passages']:,} passages x {info['dim']}, {info['test_queries']} test queries",
                  "", f"Vectors: all-MiniLM-L6-v2 (normalised), {source}. IVF-PQ at this size: nlist "
                  f"{info['nlist']} (min(4 sqrt(N), N / 39)), `{rows[2]['factory'].split(',')[1]}` (d / 2 one-byte codes), "
                  "default nprobe "
                  f"{rows[2]['nprobe']} (nlist / 4).", "",
                  "| index | faiss factory | nprobe | nDCG@10 | R@100 | overlap@100 with flat | index bytes | "
                  "bytes / passage | build s | search s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        flat = rows[0]
        for r in rows:
            d_ndcg = "" if r is flat else f" ({r['nDCG@10'] - flat['nDCG@10']:+.4f})"
            d_r = "" if r is flat else f" ({r['R@100'] - flat['R@100']:+.4f})"
            lines.append(f"| {r['index']} | `{r['factory']}` | {r['nprobe'] or ''} | {r['nDCG@10']:.4f}{d_ndcg} | "
                         f"{r['R@100']:.4f}{d_r} | {r['overlap@100']:.4f} | {r['bytes']:,} | "
                         f"{r['bytes'] / info['passages']:.0f} | {r['build_s']:.2f} | {r['search_s']:.3f} |")
        lines.append("")
    lines += _projection(results)
    return "\n".join(lines)


def _projection(results: dict) -> list[str]:
    """What each index would hold for MS MARCO's 8,841,823 passages (384 and 768 dimensions), from the measured
    bytes: HNSW-fp16's bytes per passage beyond its fp16 vectors (links, levels), IVF-PQ's d / 2 codes plus an 8-byte
    id per passage (the centroids, nlist x d floats, are negligible there)."""
    from tasb_ray.retrieval.ann import resolve_index

    n = 8_841_823
    name, (rows, info, _) = max(results.items(), key=lambda kv: kv[1][1]["passages"])
    hnsw = next(r for r in rows if r["index"] == "hnsw-fp16")
    links = hnsw["bytes"] / info["passages"] - 2 * info["dim"]
    out = ["## Projected to MS MARCO (8,841,823 passages)", "",
           f"From the measured sizes above ({name}: HNSW's {links:.0f} bytes per passage beyond its fp16 vectors; "
           "IVF-PQ's d / 2 codes + 8-byte ids + nlist x d float centroids):", "",
           "| dim | flat GiB | hnsw-fp16 GiB | ivf-pq GiB | ivf-pq factory, nprobe |", "|---:|---:|---:|---:|---|"]
    for d in (384, 768):
        p = resolve_index("ivf-pq", n, d)
        nlist = int(p.factory.split(",")[0][3:])
        ivf = n * (d // 2 + 8) + nlist * d * 4
        out.append(f"| {d} | {n * d * 4 / 2**30:.1f} | {n * (2 * d + links) / 2**30:.1f} | {ivf / 2**30:.1f} | "
                   f"`{p.factory}`, {p.nprobe} |")
    out += ["", "`eval.index: auto` (budget `eval.index_memory_gb`, default 4) keeps flat for SciFact and NFCorpus and "
            "takes IVF-PQ for MS MARCO; `hnsw-fp16` loses least but saves only a third of flat's memory.", ""]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", action="append", default=None,
                   help="NAME=PATH, PATH a prepared dataset directory or a raw dataset (repeatable)")
    p.add_argument("--work", action="append", default=None, help="work dirs to look for teacher-vectors stages")
    p.add_argument("--scratch", default="/tmp/index-choice-work", help="where to encode when no stage matches")
    p.add_argument("--threads", type=int, default=1,
                   help="faiss OpenMP threads (default 1: on a shared 2-core box, OpenMP's spinning threads made IVF-PQ "
                        "training 4x slower at 2 threads than at 1)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/index_choice.md"))
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    import faiss

    from benchmarks.machine import describe_machine

    faiss.omp_set_num_threads(args.threads)
    args.faiss_version = faiss.__version__
    load = os.getloadavg()
    results = {}
    for spec in args.dataset or DEFAULT_DATASETS:
        name, data = spec.split("=", 1)
        ds, stage, source = _vectors(data, args.work or DEFAULT_WORK, Path(args.scratch))
        rows, info = run_dataset(name, ds, stage)
        results[name] = (rows, info, source)
        print(name, info, *(f"{r['index']}: nDCG@10 {r['nDCG@10']:.4f} R@100 {r['R@100']:.4f} "
                             f"overlap {r['overlap@100']:.3f}" for r in rows), sep="\n  ")
    Path(args.out).write_text(to_markdown(results, args, describe_machine(), load))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
