"""Every non-neural stage of an MS MARCO run at a fraction of its size: wall time, peak RSS and rows (issue 13).

    python benchmarks/scale.py --scales 0.01 0.1 [1.0] [--stages STAGE ...] [--k K]
                               [--root /tmp/tasb-scale] [--out benchmarks/results/scale.md]

Per scale: synthetic MS MARCO (``benchmarks/msmarco_synth.py``, generated once under ``--root``), then each stage in
a fresh subprocess whose peak RSS is its own (``os.wait4``'s rusage, ``ru_maxrss``):

* ``prepare``  ``prepare_dataset`` of the MS MARCO directory (forced rebuild);
* ``pairs``    the teacher file → row-coded pairs (``candidates.sources: [teacher-file]``), written as Parquet;
* ``clusters`` faiss spherical k-means, k = max(16, 2000 x scale), over one vector per judged training query: random
  Gaussian vectors of dim 384 around k planted centres (cheap stand-ins of the right count and dim: k-means time
  depends on n, k, dim and iterations, not on where the vectors come from);
* ``plan``     the sampler over the row-coded pairs with those clusters, one epoch's plan and its hash;
* ``step``     the trainer's per-step data access (next batch + its texts) against a tiny-model train step (2-layer
  BERT, hidden 128, 32 queries x 30 tokens + 64 passages x 200 tokens, AdamW), medians of 20 and 5;
* ``mlflow``   one trial's logging through :class:`tasb_ray.tracking.Tracker` on a fresh SQLite store: ~60 params, 300
  metric points, 3 artifacts (config, plan, results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

STAGES = ("prepare", "pairs", "clusters", "plan", "step", "mlflow")
ROOT = Path(__file__).resolve().parents[1]


def _paths(root: Path, scale: float) -> dict[str, Path]:
    base = root / f"scale-{scale:g}"
    return {"data": base / "data", "cache": base / "cache", "work": base / "work"}


def _dataset(p):
    from tasb_ray.data.prepare import prepare_dataset
    return prepare_dataset(str(p["data"]), cache_dir=p["cache"])


def stage_prepare(p, scale) -> dict:
    from tasb_ray.data.prepare import prepare_dataset
    ds = prepare_dataset(str(p["data"]), cache_dir=p["cache"], force=True)
    c = ds.manifest["counts"]
    return {"rows": c["corpus"], "note": f"{c['corpus']:,} passages, {c['queries']:,} queries"}


def stage_pairs(p, scale) -> dict:
    import pyarrow.parquet as pq

    from tasb_ray.schema import DOC_ID, QUERY_ID
    from tasb_ray.training.teacher_pairs import pairs_from_teacher_file, write_row_pairs
    ds = _dataset(p)
    table, counts = pairs_from_teacher_file(p["data"] / "teacher.train.tsv",
                                            pq.read_table(ds.root / "queries.parquet", columns=[QUERY_ID])[QUERY_ID],
                                            pq.read_table(ds.corpus_path, columns=[DOC_ID])[DOC_ID],
                                            ds.qrels("train")[QUERY_ID].unique())
    p["work"].mkdir(parents=True, exist_ok=True)
    write_row_pairs(p["work"] / "pairs.parquet", table)
    return {"rows": table.num_rows, "note": f"{counts['lines']:,} lines, int32 ids"}


def stage_clusters(p, scale, k: int | None = None) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    from tasb_ray.training.clusters import cluster_queries
    pairs = pq.read_table(p["work"] / "pairs.parquet", columns=["q_row"])["q_row"].to_numpy()
    rows = np.unique(pairs)
    out = p["work"] / ("clusters.parquet" if k is None else f"clusters-k{k}.parquet")  # the plan reads the default
    k = k or max(16, round(2000 * scale))
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((k, 384)).astype(np.float32)
    vectors = centres[rng.integers(0, k, len(rows))] + 0.5 * rng.standard_normal((len(rows), 384)).astype(np.float32)
    t = time.perf_counter()
    assignment = cluster_queries([str(r) for r in rows], vectors, k, seed=0)
    seconds = time.perf_counter() - t
    pd.DataFrame({"q_row": rows, "cluster": assignment["cluster"].to_numpy()}).to_parquet(out)
    return {"rows": len(rows), "note": f"k={k}, dim 384, faiss k-means {seconds:.1f} s"}


def _sampler(p, texts: bool):
    """The sampler as the training pipeline builds it from the row-coded pairs (``pipeline.run.train_data``): the
    Arrow table renamed, its columns kept as views; the id tables, and the text columns only when ``texts``."""
    import pandas as pd

    from tasb_ray.schema import DOC_ID, PAIRS_COLUMNS, QUERY_ID, TEXT
    from tasb_ray.tables import read_columns
    from tasb_ray.training.sampling import BatchSampler, PairIds, SamplerConfig
    from tasb_ray.training.teacher_pairs import read_row_pairs
    ds = _dataset(p)
    pairs = read_row_pairs(p["work"] / "pairs.parquet").rename_columns(list(PAIRS_COLUMNS))
    queries = read_columns(ds.root / "queries.parquet", [QUERY_ID, TEXT] if texts else [QUERY_ID])
    corpus = read_columns(ds.corpus_path, [DOC_ID, TEXT] if texts else [DOC_ID])
    ids = PairIds(queries[QUERY_ID], corpus[DOC_ID])
    c = pd.read_parquet(p["work"] / "clusters.parquet")
    clusters = pd.DataFrame({"qid": ids.queries.take(c["q_row"].to_numpy()).to_numpy(zero_copy_only=False),
                             "cluster": c["cluster"].to_numpy()})
    sampler = BatchSampler(pairs, SamplerConfig(sampling="tas-balanced", batch_size=32), clusters, ids=ids)
    return sampler, (pairs, queries[TEXT] if texts else None, corpus[TEXT] if texts else None, clusters, ids)


def stage_plan(p, scale) -> dict:
    from tasb_ray.training.sampling import build_plan, plan_hash, write_plan
    sampler, _ = _sampler(p, texts=False)
    plan = build_plan(sampler, sampler.batches_per_epoch)
    h = plan_hash(plan)
    write_plan(plan, p["work"] / "plan.parquet")
    return {"rows": len(plan), "note": f"{sampler.batches_per_epoch:,} batches of 32, hash {h[:12]}"}


def stage_step(p, scale) -> dict:
    import torch

    from tasb_ray.losses import TasbLoss
    from tasb_ray.models.encoder import BertDot
    from tasb_ray.models.tiny import build_tiny_bert
    from tasb_ray.training.trainer import TrainData
    torch.set_num_threads(1)
    sampler, parts = _sampler(p, texts=True)
    data = TrainData(*parts[:4], ids=parts[4])
    access = []
    for _ in range(20):
        t = time.perf_counter()
        batch = next(sampler)
        data.batch_texts(batch)
        access.append(time.perf_counter() - t)
    model_dir = build_tiny_bert(Path(tempfile.mkdtemp(prefix="tiny-")))
    student = BertDot(model_dir, pooling="cls", normalize=False, query_max_len=30, passage_max_len=200)
    student.train()
    opt = torch.optim.AdamW(student.parameters(), lr=7e-6)
    loss_fn = TasbLoss(0.0)
    steps = []
    for _ in range(5):
        batch = next(sampler)
        t = time.perf_counter()
        q_texts, p_texts = data.batch_texts(batch)
        q, d = student.embed(q_texts, "query"), student.embed(p_texts, "passage")
        b = len(batch)
        out = loss_fn((q * d[:b]).sum(-1), (q * d[b:]).sum(-1), torch.as_tensor(batch.pos_scores, dtype=torch.float32),
                      torch.as_tensor(batch.neg_scores, dtype=torch.float32))
        out.total.backward()
        opt.step()
        opt.zero_grad()
        steps.append(time.perf_counter() - t)
    a, s = float(np.median(access)), float(np.median(steps))
    return {"rows": 32, "note": f"data access {a * 1e3:.2f} ms vs tiny-model step {s * 1e3:.0f} ms: "
                                f"{100 * a / s:.2f}%"}


def stage_mlflow(p, scale) -> dict:
    from tasb_ray.config import load_config, to_dict
    from tasb_ray.tracking import Tracker
    from tasb_ray.training.config import TrainingConfig
    store = Path(tempfile.mkdtemp(prefix="mlflow-"))
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}")
    exp = tracker.ensure_experiment("scale", artifact_dir=store / "artifacts")
    run = tracker.create_run(exp, "trial", {"tasb_ray.kind": "trial"})
    cfg = load_config(TrainingConfig, ROOT / "experiments" / "configs" / "msmarco.yaml")
    flat = {}

    def walk(prefix, d):
        for k, v in d.items():
            walk(f"{prefix}{k}.", v) if isinstance(v, dict) else flat.__setitem__(f"{prefix}{k}", v)
    walk("", to_dict(cfg))
    tracker.log_params(run, flat)
    for step in range(1, 101):
        tracker.log_metrics(run, {"loss": 1 / step, "loss_pair": 0.5 / step, "lr": 7e-6}, step=step)
    (store / "config.json").write_text(json.dumps(flat, default=str))
    (store / "results.json").write_text(json.dumps({"dev": {"MRR@10": 0.3}}))
    for f in (store / "config.json", store / "results.json", p["work"] / "plan.parquet"):
        tracker.log_artifact(run, f)
    tracker.finish(run)
    tracker.close()
    return {"rows": 300, "note": f"{len(flat)} params, 300 metric points, 3 artifacts (plan included)"}


def _child(stage: str, scale: float, root: Path, k: int | None) -> None:
    out = globals()[f"stage_{stage}"](_paths(root, scale), scale, *([k] if stage == "clusters" and k else []))
    print("RESULT " + json.dumps(out), flush=True)


def _measure(stage: str, scale: float, root: Path, k: int | None = None) -> dict:
    """Run one stage in a fresh interpreter under /usr/bin/time: its wall time and its own peak RSS."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        t = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", tf.name, sys.executable, __file__, "--child", stage,
                               "--scales", str(scale), "--root", str(root), *(["--k", str(k)] if k else [])],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(f"stage {stage} at scale {scale} failed:\n{proc.stderr[-3000:]}")
        rss_kib = int(tf.read().strip().splitlines()[-1])
    result = json.loads(next(line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    return {"stage": stage, "scale": scale, "wall_s": wall, "peak_rss_mib": rss_kib / 1024, **result}


def write_report(rows: list[dict], out: Path, argv: list[str]) -> None:
    lines = ["# Non-neural stages at scale (issue 13)", "",
             f"Command: `python benchmarks/scale.py {' '.join(argv)}`", "",
             f"Machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} "
             f"GiB RAM, no GPU, Python {platform.python_version()}, shared with other work. Each stage runs in a fresh "
             "interpreter (start-up and imports included in its wall time); peak RSS is that process's "
             "(`/usr/bin/time -f %M`). Data: `benchmarks/msmarco_synth.py --seed 0` at each scale.", "",
             "| scale | stage | wall (s) | peak RSS (MiB) | rows | notes |", "|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['scale']:g} | {r['stage']} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | "
                     f"{r['rows']:,} | {r['note']} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "tasb-scale")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.md")
    ap.add_argument("--k", type=int, help="clusters stage only: this k instead of max(16, 2000 x scale), written "
                                          "beside the default assignment (which the plan keeps reading)")
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.scales[0], args.root, args.k)
        return 0
    rows = []
    for scale in args.scales:
        data = _paths(args.root, scale)["data"]
        if not (data / "msmarco_synth.json").is_file():
            subprocess.run([sys.executable, str(ROOT / "benchmarks" / "msmarco_synth.py"), "--scale", str(scale),
                            "--out", str(data), "--seed", "0"], check=True)
        for stage in args.stages:
            r = _measure(stage, scale, args.root, args.k)
            print(f"scale {scale:g} {stage}: {r['wall_s']:.1f} s, {r['peak_rss_mib']:.0f} MiB, {r['rows']:,} rows; "
                  f"{r['note']}", flush=True)
            rows.append(r)
        write_report(rows, args.out, argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
