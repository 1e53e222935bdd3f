"""The starting balance of the two loss terms for each in-batch teacher scale (issue 14, item 2).

    python benchmarks/loss_balance.py experiments/configs/scifact.yaml [--set key=value ...] [--batches 5]
        [--samplings tas-balanced random] [--out benchmarks/results/loss_balance.json]

For the first ``--batches`` batches of each sampling's plan, at the student's initial weights (train mode, as the
first steps of training see it, no update), computes ``L_pair``, ``L_inb`` for every ``teachers.inbatch_scale``
(raw, zscore, match-pairwise, match-loss) on the same student scores, the ratio ``alpha * mean(L_inb) / mean(L_pair)``, the
teachers' margin sds and means, and the student's own. Shared stages must be cached (``tasb-ray train`` or
``prepare_shared_stages`` builds them). No training, no evaluation: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch

from tasb_ray.config import load_config
from tasb_ray.losses import TasbLoss
from tasb_ray.pipeline.clusters import clusters_stage
from tasb_ray.pipeline.context import open_data, work_dir
from tasb_ray.pipeline.pairs import pairs_stage
from tasb_ray.pipeline.teacher_vectors import attach_teacher_vectors
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT
from tasb_ray.teachers import build_teacher
from tasb_ray.training.clusters import read_clusters
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.loss_balance import (
    INBATCH_SCALES,
    ScaledInBatchTeacher,
    calibration_batches,
    inbatch_margins,
    pair_margins,
    spread,
)
from tasb_ray.training.pairs import read_pairs
from tasb_ray.training.trainer import TrainData, Trainer


def measure(cfg: TrainingConfig, samplings: list[str], n_batches: int) -> dict:
    ds = open_data(cfg)
    pairs_dir, _ = pairs_stage(cfg, ds, require_cached=True)
    clusters_dir, _ = clusters_stage(cfg, ds, require_cached=True)
    corpus, queries = ds.corpus(), ds.queries(cfg.data.train_split)
    data = TrainData(read_pairs(pairs_dir / "pairs.parquet"), dict(zip(queries[QUERY_ID], queries[TEXT])),
                     dict(zip(corpus[DOC_ID], corpus[TEXT])), read_clusters(clusters_dir / "clusters.parquet"))
    teacher = build_teacher(cfg.teachers.inbatch, corpus=corpus)
    attach_teacher_vectors(teacher, cfg.teachers.inbatch, ds, work_dir(cfg), require_cached=True,
                           vector_dtype=cfg.teachers.vector_dtype)
    calib = lambda: (calibration_batches(data.pairs, cfg.sampler.batch_size), data.batch_texts)
    trainers = {s: Trainer(dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, sampling=s)), data,
                           "/tmp/loss-balance-unused", teacher) for s in samplings}
    # Every arm of a seed starts from the same weights, so any arm's student calibrates match-loss.
    student_fn = trainers[samplings[0]].student_matrix
    scaled = {m: ScaledInBatchTeacher(teacher, m, calib, student=student_fn) for m in INBATCH_SCALES}
    factors = {m: s.calibrate() for m, s in scaled.items()}
    loss_fn = TasbLoss(cfg.alpha)
    out: dict = {"factors": factors, "calibration": {m: scaled[m].calibration_stats for m in scaled},
                 "samplings": {}}
    for sampling in samplings:
        trainer = trainers[sampling]
        run_cfg = trainer.cfg
        scale = run_cfg.student.score_scale
        rows = {m: {"loss_pair": [], "loss_inbatch": [], "margin_sd_inbatch": [], "margin_mean_inbatch": []}
                for m in INBATCH_SCALES}
        student = {"margin_sd_pair": [], "margin_mean_pair": [], "margin_sd_inbatch": [], "margin_mean_inbatch": []}
        teacher_pair = {"margin_sd_pair": [], "margin_mean_pair": []}
        for _ in range(n_batches):
            batch = next(trainer.sampler)
            q_texts = [data.query_text[q] for q in batch.qids]
            pids = batch.pos_pids + batch.neg_pids
            p_texts = [data.passage_text[p] for p in pids]
            b = len(batch)
            with torch.no_grad():
                q = trainer.student.embed(q_texts, "query").float()
                p = trainer.student.embed(p_texts, "passage").float()
            s = (q @ p.T) * scale
            s_pos, s_neg = torch.diagonal(s[:, :b]), torch.diagonal(s[:, b:])
            for key, value in zip(("margin_mean_pair", "margin_sd_pair"), spread(pair_margins(s_pos, s_neg))):
                student[key].append(value)
            for key, value in zip(("margin_mean_inbatch", "margin_sd_inbatch"), spread(inbatch_margins(s.numpy()))):
                student[key].append(value)
            for key, value in zip(("margin_mean_pair", "margin_sd_pair"),
                                  spread(pair_margins(batch.pos_scores, batch.neg_scores))):
                teacher_pair[key].append(value)
            t_pos = torch.as_tensor(batch.pos_scores, dtype=torch.float32)
            t_neg = torch.as_tensor(batch.neg_scores, dtype=torch.float32)
            for mode, tch in scaled.items():
                matrix = np.asarray(tch.score_matrix(batch.qids, q_texts, pids, p_texts))
                t = torch.as_tensor(matrix, dtype=torch.float32)
                res = loss_fn(s_pos, s_neg, t_pos, t_neg, s[:, :b], s[:, b:], t[:, :b], t[:, b:])
                r = rows[mode]
                r["loss_pair"].append(float(res.pairwise))
                r["loss_inbatch"].append(float(res.inbatch))
                mean_m, sd_m = spread(inbatch_margins(matrix))
                r["margin_sd_inbatch"].append(sd_m)
                r["margin_mean_inbatch"].append(mean_m)
        result = {"student": {k: float(np.mean(v)) for k, v in student.items()},
                  "teacher_pair": {k: float(np.mean(v)) for k, v in teacher_pair.items()}, "modes": {}}
        for mode, r in rows.items():
            mean = {k: float(np.mean(v)) for k, v in r.items()}
            mean["loss_ratio"] = cfg.alpha * mean["loss_inbatch"] / mean["loss_pair"]
            mean["spread_ratio"] = mean["margin_sd_inbatch"] / result["teacher_pair"]["margin_sd_pair"]
            result["modes"][mode] = mean
        out["samplings"][sampling] = result
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--samplings", nargs="+", default=["tas-balanced", "random"])
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = load_config(TrainingConfig, args.config, args.overrides + ["progress=false"])
    t0 = time.perf_counter()
    result = measure(cfg, args.samplings, args.batches)
    result.update({"config": args.config, "overrides": args.overrides, "batches": args.batches,
                   "alpha": cfg.alpha, "seconds": round(time.perf_counter() - t0, 1),
                   "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, no GPU"})
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
