"""One TAS-Balanced run end to end: data → pairs → clusters → training → dev/test evaluation.

The shared stages (pairs, clusters) are cached in the work directory; the run itself writes to its
output directory and resumes from its checkpoint when restarted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from tasb_ray.config import to_dict
from tasb_ray.data import PreparedDataset, prepare_dataset
from tasb_ray.data.prepare import PrepareOptions, cache_root
from tasb_ray.fileio import write_json
from tasb_ray.schema import DOC_ID, QUERY_ID, TEXT
from tasb_ray.stages import cached_stage, dataset_identity
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import BEST, EvalData, Reporter, TrainData, Trainer

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict[str, dict[str, float]]          # split -> metric -> value, for the selected model
    plan_hash: str
    steps: int
    best_step: int | None
    stages: dict[str, dict] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def open_data(cfg: TrainingConfig) -> PreparedDataset:
    d = cfg.data
    return prepare_dataset(d.dataset, cache_dir=d.cache_dir,
                           options=PrepareOptions(dev_fraction=d.dev_fraction, dev_seed=d.dev_seed))


def work_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.work_dir) if cfg.work_dir else cache_root(cfg.data.cache_dir) / "work"


def output_dir(cfg: TrainingConfig) -> Path:
    return Path(cfg.output_dir) if cfg.output_dir else Path("runs") / cfg.name


def _encoder(model: str, cfg: TrainingConfig):
    from tasb_ray.models.encoder import BertDot, pick_device

    s = cfg.student
    enc = BertDot(model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                  passage_max_len=s.passage_max_len)
    return enc.to(pick_device(cfg.device)).eval()


def pairs_stage(cfg: TrainingConfig, ds: PreparedDataset) -> tuple[Path, dict]:
    """Candidates → triples → pairwise-teacher scores, once per (data, candidates, teacher) setting."""
    from tasb_ray.teachers import build_teacher
    from tasb_ray.training.candidates import first_stage_candidates, write_candidates
    from tasb_ray.training.pairs import build_triples, pair_stats, score_triples, write_pairs

    c = cfg.candidates
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "candidates": to_dict(c),
              "teacher": to_dict(cfg.teachers.pairwise),
              "dense_encoder": cfg.student.model if "dense" in c.sources else None}

    def build(tmp: Path) -> dict:
        encoder = _encoder(cfg.student.model, cfg) if "dense" in c.sources else None
        cands = first_stage_candidates(ds, cfg.data.train_split, c.sources, c.depth, encoder=encoder,
                                       show_progress=cfg.progress)
        write_candidates(tmp / "candidates.parquet", cands)
        triples = build_triples(cands, ds.qrels(cfg.data.train_split), c.negatives_per_query, c.seed,
                                c.max_positives)
        triple_stats = dict(triples.attrs.get("stats", {}))
        corpus = ds.corpus()
        teacher = build_teacher(cfg.teachers.pairwise, corpus=corpus)
        pairs = score_triples(triples, ds.queries(cfg.data.train_split), corpus, teacher,
                              show_progress=cfg.progress)
        write_pairs(tmp / "pairs.parquet", pairs)
        return {"triples": triple_stats, "pairs": pair_stats(pairs)}

    return cached_stage(work_dir(cfg), "pairs", inputs, build)


def clusters_stage(cfg: TrainingConfig, ds: PreparedDataset) -> tuple[Path, dict]:
    """k-means topic clusters of the training queries, once per (data, encoder, k) setting."""
    from tasb_ray.training.clusters import cluster_stats, encode_and_cluster, write_clusters

    k = cfg.clusters
    encoder_name = k.encoder or cfg.student.model
    inputs = {"data": dataset_identity(ds.manifest), "split": cfg.data.train_split, "clusters": to_dict(k),
              "encoder": encoder_name, "pooling": cfg.student.pooling, "normalize": cfg.student.normalize,
              "query_max_len": cfg.student.query_max_len}

    def build(tmp: Path) -> dict:
        assignment = encode_and_cluster(_encoder(encoder_name, cfg), ds.queries(cfg.data.train_split), k.k, k.seed,
                                        niter=k.niter, show_progress=cfg.progress)
        write_clusters(tmp / "clusters.parquet", assignment)
        return cluster_stats(assignment, k.k)

    return cached_stage(work_dir(cfg), "clusters", inputs, build)


def eval_data(ds: PreparedDataset, split: str, corpus: pd.DataFrame) -> EvalData:
    return EvalData(split, corpus, ds.queries(split), ds.qrels(split))


def run_training(cfg: TrainingConfig, reporters: Sequence[Reporter] = (), resume: bool = True) -> RunResult:
    from tasb_ray.teachers import build_teacher
    from tasb_ray.training.clusters import read_clusters
    from tasb_ray.training.pairs import read_pairs

    ds = open_data(cfg)
    out = output_dir(cfg)
    pairs_dir, pairs_info = pairs_stage(cfg, ds)
    stages = {"pairs": {"path": str(pairs_dir), **pairs_info}}
    clusters = None
    if cfg.sampler.uses_clusters:
        clusters_dir, clusters_info = clusters_stage(cfg, ds)
        stages["clusters"] = {"path": str(clusters_dir), **clusters_info}
        clusters = read_clusters(clusters_dir / "clusters.parquet")

    corpus = ds.corpus()
    queries = ds.queries(cfg.data.train_split)
    data = TrainData(read_pairs(pairs_dir / "pairs.parquet"), dict(zip(queries[QUERY_ID], queries[TEXT])),
                     dict(zip(corpus[DOC_ID], corpus[TEXT])), clusters)
    teacher = build_teacher(cfg.teachers.inbatch, corpus=corpus) if cfg.alpha > 0 else None
    dev = eval_data(ds, cfg.data.dev_split, corpus) if cfg.eval.every else None
    trainer = Trainer(cfg, data, out, teacher, dev=dev, reporters=reporters)
    result = trainer.fit(resume=resume)

    # The model that is reported: the best on dev when dev was evaluated during training, else the last.
    if cfg.eval.every and (out / BEST).is_dir():
        from tasb_ray.training.trainer import load_weights

        load_weights(trainer.student, out / BEST)
    splits = [cfg.data.dev_split] + ([cfg.data.test_split] if cfg.eval.test else [])
    metrics = trainer.evaluate_splits([eval_data(ds, s, corpus) for s in splits], out / "runs")
    for split, values in metrics.items():
        for r in reporters:
            r.on_eval(result.steps, f"final_{split}", values)
    write_json(out / "results.json", {"metrics": metrics, "plan_hash": result.plan_hash, "steps": result.steps,
                                      "best_step": result.best_step, "stages": stages,
                                      "selected": "best" if cfg.eval.every else "last"})
    return RunResult(out, metrics, result.plan_hash, result.steps, result.best_step, stages, result.history)
