"""The TAS-Balanced training loop: resumable, deterministic on CPU, reporting through pluggable reporters."""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from tasb_ray.config import dump_yaml, to_dict
from tasb_ray.data.trec import write_trec_run
from tasb_ray.distributed.options import RayOptions
from tasb_ray.errors import TasbRayError
from tasb_ray.evaluation.corpus_index import CorpusIndexOptions, corpus_index
from tasb_ray.evaluation.first_stage import dense_search
from tasb_ray.evaluation.metrics import evaluate
from tasb_ray.fileio import atomic_dir, write_json, write_text
from tasb_ray.losses import TasbLoss
from tasb_ray.losses.combined import uses_inbatch
from tasb_ray.models.encoder import BertDot, pick_device, reinit_top_layers
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.loss_balance import (
    ScaledInBatchTeacher,
    calibration_batches,
    inbatch_margins,
    pair_margins,
    spread,
)
from tasb_ray.training.sampling import (
    Batch,
    BatchSampler,
    PairIds,
    build_plan,
    plan_hash,
    plan_metrics,
    plan_statistics,
    write_plan,
)
from tasb_ray.training.sampling.sampler import take_ids

CHECKPOINT = "checkpoint"
BEST = "best"
STATE = "trainer_state.json"
HISTORY = "metrics.jsonl"
EVAL_VECTORS = "eval-vectors"  # the Ray path's saved model and resumable corpus shards


@dataclass
class TrainData:
    """Scored pairs (qid, pos_pid, neg_pid, pos_score, neg_score), clusters (qid, cluster) and the texts.

    With ``ids`` the pairs' id columns are rows of ``ids``' tables and the texts are columns aligned with them (Arrow
    or NumPy), looked up by row; otherwise ids are strings and the texts dicts keyed by them. ``pairs`` is a pandas
    DataFrame or, row-coded, a pyarrow Table (the sampler keeps views of its columns: do not modify it).
    """

    pairs: pd.DataFrame | pa.Table
    query_text: Mapping[str, str] | Any
    passage_text: Mapping[str, str] | Any
    clusters: pd.DataFrame | None = None
    ids: PairIds | None = None

    def batch_texts(self, batch: Batch) -> tuple[list[str], list[str]]:
        """(query texts, [positive; negative] passage texts) of a batch."""
        if self.ids is not None:
            rows = np.concatenate([batch.pos_rows, batch.neg_rows])
            return take_ids(self.query_text, batch.query_rows).tolist(), take_ids(self.passage_text, rows).tolist()
        return ([self.query_text[q] for q in batch.qids],
                [self.passage_text[p] for p in batch.pos_pids + batch.neg_pids])

    def training_texts(self) -> tuple[list[str], list[str], list[str], list[str]]:
        """(qids, query texts, pids, passage texts) of every query and passage the pairs use, each sorted by id."""
        if self.ids is None:
            qids = sorted(set(self.pairs["qid"]))
            pids = sorted(set(self.pairs["pos_pid"]) | set(self.pairs["neg_pid"]))
            return (qids, [self.query_text[q] for q in qids], pids, [self.passage_text[p] for p in pids])
        out = []
        for rows, table, texts in ((np.unique(self.pairs["qid"].to_numpy()), self.ids.queries, self.query_text),
                                   (np.unique(np.concatenate([self.pairs["pos_pid"].to_numpy(),
                                                              self.pairs["neg_pid"].to_numpy()])),
                                    self.ids.passages, self.passage_text)):
            names = take_ids(table, rows)
            order = np.argsort(names, kind="stable")
            out += [names[order].tolist(), take_ids(texts, rows[order]).tolist()]
        return tuple(out)


@dataclass
class EvalData:
    """A split to evaluate by dense retrieval over ``corpus`` (doc_id, text); ``dataset`` (the prepared dataset the
    corpus comes from) lets a corpus of ``eval.ray_min_passages`` or more be encoded on Ray Data."""

    split: str
    corpus: pd.DataFrame
    queries: pd.DataFrame
    qrels: pd.DataFrame
    dataset: Any = None


class Reporter(Protocol):
    """Receives training events; Ray Tune and MLflow plug in here. Any method may raise to stop the run."""

    def on_log(self, step: int, metrics: dict[str, float]) -> None: ...

    def on_eval(self, step: int, split: str, metrics: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, path: Path) -> None: ...


@dataclass
class TrainResult:
    steps: int
    best_step: int | None
    best_metric: float | None
    plan_hash: str
    final_dir: Path
    history: list[dict] = field(default_factory=list)


def total_steps(cfg: TrainingConfig, batches_per_epoch: int) -> int:
    if cfg.optim.max_steps is not None:
        return int(cfg.optim.max_steps)
    return max(1, math.ceil(cfg.optim.epochs * batches_per_epoch / cfg.optim.grad_accum))


def reinit_seed(seed: int) -> int:
    """The re-initialisation seed: from the run seed only, so the arms of one seed (sampling, alpha, ...) start
    from the same weights, and apart from torch's global stream (dropout) that ``seed`` itself drives."""
    return int(np.random.SeedSequence([seed, 0x7EA1]).generate_state(1)[0])


def load_weights(student: BertDot, model_dir: Path) -> None:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise TasbRayError(f"{model_dir}: no safetensors weights")
    state = {}
    for f in files:
        state.update(load_file(str(f), device=str(student.device)))
    student.bert.load_state_dict(state, strict=False)


def load_rng_state(path: Path) -> dict:
    """Read ``rng.pt`` with torch's tensors-only unpickler: a checkpoint directory may come from elsewhere, and a
    full unpickle would run any code planted in it. What the trainer saves (tensors, the scaler's numbers) loads."""
    import pickle

    try:
        rng = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        # torch's message spans many lines; its first line says which global was refused.
        first = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln), "")
        raise TasbRayError(f"{path}: refused to load: not a plain RNG state (tensors and numbers only)"
                           + (f"; {first}" if first else "")) from None
    if not isinstance(rng, dict) or not isinstance(rng.get("torch"), torch.Tensor):
        raise TasbRayError(f"{path}: not an RNG state saved by tasb-ray (expected a 'torch' tensor)")
    return rng


class Trainer:
    """Trains a BERT-DOT student with ``L = L_pair + alpha * L_inb`` on the batches of a :class:`BatchSampler`.

    Args:
        cfg: the run's configuration.
        data: scored training pairs, clusters and texts.
        output_dir: where checkpoints, the plan, metrics and the final model go.
        inbatch_teacher: scores the B x 2B (queries x [positives; negatives]) matrix; needed when alpha > 0. Used
            scaled as ``cfg.teachers.inbatch_scale`` says (:mod:`tasb_ray.training.loss_balance`).
        dev: dev split for periodic evaluation and best-checkpoint selection.
        reporters: event sinks (MLflow, Ray Tune, ...).
    """

    def __init__(self, cfg: TrainingConfig, data: TrainData, output_dir: str | Path, inbatch_teacher=None,
                 dev: EvalData | None = None, reporters: Sequence[Reporter] = (), ray: RayOptions | None = None):
        self.cfg = cfg
        self.ray = ray  # how a corpus-scale evaluation's Ray Data encoding runs
        self.data = data
        self.out = Path(output_dir)
        self.teacher = None
        if inbatch_teacher is not None:
            self.teacher = ScaledInBatchTeacher(
                inbatch_teacher, cfg.teachers.inbatch_scale,
                lambda: (calibration_batches(data.pairs, cfg.sampler.batch_size, ids=data.ids), data.batch_texts),
                student=self.student_matrix)
        self.dev = dev
        self.reporters = list(reporters)
        if uses_inbatch(cfg.alpha) and inbatch_teacher is None:
            raise TasbRayError("alpha > 0 needs an in-batch teacher")
        self.device = pick_device(cfg.device)
        # Given to every composition when there are clusters: random batches then get the chance-level plan statistics.
        self.sampler = BatchSampler(data.pairs, cfg.sampler, data.clusters, ids=data.ids)
        self.steps = total_steps(cfg, self.sampler.batches_per_epoch)
        self.loss_fn = TasbLoss(cfg.alpha)

        torch.manual_seed(cfg.seed)
        s = cfg.student
        self.student = BertDot(s.model, pooling=s.pooling, normalize=s.normalize, query_max_len=s.query_max_len,
                               passage_max_len=s.passage_max_len, attention_dropout=s.attention_dropout,
                               score_scale=s.score_scale)
        reinit_top_layers(self.student.bert, s.reinit_top_layers, reinit_seed(cfg.seed))
        self.student.to(self.device).train()
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=o.lr, weight_decay=o.weight_decay)

        name = {"constant": "constant_with_warmup"}.get(o.schedule, o.schedule)
        self.scheduler = get_scheduler(name, self.optimizer, num_warmup_steps=o.warmup_steps,
                                       num_training_steps=self.steps)
        self.amp_dtype = None
        self.scaler = None
        if o.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if self.amp_dtype == torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        self.step = 0
        self.best_metric: float | None = None
        self.best_step: int | None = None
        self.plan_hash = ""
        self.history: list[dict] = []
        self.plan_stats: dict = {}
        self.last_index = None
        self.eval_index_stats: dict = {}

    # -- one step -------------------------------------------------------------------------------------------------

    def _autocast(self):
        """Autocast on the trainer's device with ``amp_dtype`` (set on CUDA when ``optim.amp``), else a no-op.

        ``amp_dtype`` may be set on CPU too (bfloat16): that is how the tests compare the mixed-precision step
        with float32 on a machine without a GPU.
        """
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def student_matrix(self, batch: Batch) -> np.ndarray:
        """The student's B x 2B scores of a batch, as training scales them, without dropout or gradient."""
        was = self.student.training
        self.student.eval()
        q_texts, p_texts = self.data.batch_texts(batch)
        with torch.no_grad(), self._autocast():
            q = self.student.embed(q_texts, "query").float()
            p = self.student.embed(p_texts, "passage").float()
        self.student.train(was)
        return ((q @ p.T) * self.cfg.student.score_scale).cpu().numpy()

    def batch_loss(self, batch: Batch):
        """The loss terms of one batch, and the teachers' margin statistics (``margin_{mean,sd}_{pair,inbatch}``)."""
        q_texts, p_texts = self.data.batch_texts(batch)
        pids = batch.pos_pids + batch.neg_pids
        b = len(batch)
        scale = self.cfg.student.score_scale
        with self._autocast():
            q = self.student.embed(q_texts, "query").float()
            p = self.student.embed(p_texts, "passage").float()
        pos, neg = p[:b], p[b:]
        s_pos = (q * pos).sum(-1) * scale
        s_neg = (q * neg).sum(-1) * scale
        t_pos = torch.as_tensor(batch.pos_scores, dtype=torch.float32, device=self.device)
        t_neg = torch.as_tensor(batch.neg_scores, dtype=torch.float32, device=self.device)
        stats = dict(zip(("margin_mean_pair", "margin_sd_pair"), spread(pair_margins(batch.pos_scores,
                                                                                       batch.neg_scores))))
        if not uses_inbatch(self.cfg.alpha):
            return self.loss_fn(s_pos, s_neg, t_pos, t_neg), stats
        # One teacher call over [positives; negatives], so per-query normalising teachers put both on one scale.
        matrix = np.asarray(self.teacher.score_matrix(batch.qids, q_texts, pids, p_texts))
        stats.update(zip(("margin_mean_inbatch", "margin_sd_inbatch"), spread(inbatch_margins(matrix))))
        t = torch.as_tensor(matrix, dtype=torch.float32, device=self.device)
        s = (q @ p.T) * scale
        return self.loss_fn(s_pos, s_neg, t_pos, t_neg, s[:, :b], s[:, b:], t[:, :b], t[:, b:]), stats

    def train_step(self) -> dict[str, float]:
        accum = self.cfg.optim.grad_accum
        totals = {"loss": 0.0, "loss_pair": 0.0, "loss_inbatch": 0.0}
        for _ in range(accum):
            out, stats = self.batch_loss(next(self.sampler))
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + v / accum
            loss = out.total / accum
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            totals["loss"] += out.total.item() / accum
            totals["loss_pair"] += out.pairwise.item() / accum
            if out.inbatch is not None:
                totals["loss_inbatch"] += out.inbatch.item() / accum
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.optim.grad_clip:
            totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(),
                                                                       self.cfg.optim.grad_clip))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        totals["lr"] = self.scheduler.get_last_lr()[0]
        if self.teacher is not None:
            totals["inbatch_scale_factor"] = self.teacher.factor
        return totals

    # -- evaluation -----------------------------------------------------------------------------------------------

    def evaluate_splits(self, splits: Sequence[EvalData], run_dir: Path | None = None) -> dict[str, dict[str, float]]:
        """Metrics per split; the corpus (the same object for all splits) is encoded once (on Ray Data from
        ``eval.ray_min_passages`` passages, see :mod:`tasb_ray.evaluation.corpus_index`)."""
        was = self.student.training
        self.student.eval()
        e = self.cfg.eval
        index, corpus, out = None, None, {}
        for data in splits:
            if data.corpus is not corpus:
                self.eval_index_stats = {}
                index = corpus_index(self.student, data.corpus, CorpusIndexOptions.from_eval(e),
                                     dataset=data.dataset, work_dir=self.out / EVAL_VECTORS, ray=self.ray,
                                     show_progress=self.cfg.progress, stats=self.eval_index_stats)
                self.eval_index_stats["index"] = index.meta.get("kind")
                corpus = data.corpus
            run = dense_search(self.student, index, data.queries, e.k, e.batch_size)
            if run_dir is not None:
                write_trec_run(run, run_dir / f"{data.split}.trec", tag=f"tasb-ray-{self.cfg.name}")
            out[data.split] = evaluate(run, data.qrels, e.metrics, self.cfg.data.rel_level)
        self.student.train(was)
        # Kept for callers that go on to use the same vectors (the retrieval pipelines after training).
        self.last_index = index
        return out

    def _record(self, entry: dict) -> None:
        self.history.append(entry)
        with open(self.out / HISTORY, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _eval_dev(self) -> None:
        metrics = self.evaluate_splits([self.dev])[self.dev.split]
        self._record({"step": self.step, "split": self.dev.split, **metrics})
        for r in self.reporters:
            r.on_eval(self.step, self.dev.split, metrics)
        value = metrics[self.cfg.eval.metric]
        if self.best_metric is None or value > self.best_metric:
            self.best_metric, self.best_step = value, self.step
            with atomic_dir(self.out / BEST) as tmp:
                self.student.save(tmp)
                write_json(tmp / "best.json", {"step": self.step, **metrics})

    # -- checkpoints ----------------------------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        path = self.out / CHECKPOINT
        with atomic_dir(path) as tmp:
            self.student.save(tmp / "model")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            if self.scaler:
                rng["scaler"] = self.scaler.state_dict()
            torch.save(rng, tmp / "rng.pt")
            write_json(tmp / STATE, {"step": self.step, "sampler": self.sampler.state_dict(),
                                     "best_metric": self.best_metric, "best_step": self.best_step,
                                     "plan_hash": self.plan_hash, "config": to_dict(self.cfg)})
        for r in self.reporters:
            r.on_checkpoint(self.step, path)
        return path

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / STATE).read_text())
        saved, now, default = dict(state["config"]), to_dict(self.cfg), to_dict(TrainingConfig())
        # Only what changes the optimisation trajectory must match; paths and logging may differ.
        for key in ("seed", "alpha", "sampler", "student", "optim", "teachers", "candidates", "clusters", "data"):
            if isinstance(saved.get(key), dict):
                # A field added since the checkpoint was made had its default value then.
                saved[key] = {**{k: v for k, v in default[key].items() if k not in saved[key]}, **saved[key]}
            if saved.get(key) != now.get(key):
                raise TasbRayError(f"{path}: checkpoint was made with a different '{key}' config; "
                                   "use a new output_dir or delete the checkpoint")
        load_weights(self.student, path / "model")
        self.optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location=self.device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng = load_rng_state(path / "rng.pt")
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if self.scaler and "scaler" in rng:
            self.scaler.load_state_dict(rng["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = int(state["step"])
        self.best_metric, self.best_step = state["best_metric"], state["best_step"]
        # Events after the checkpoint will be replayed, so drop them from the history.
        hist = self.out / HISTORY
        if hist.is_file():
            kept = [json.loads(x) for x in hist.read_text().splitlines() if x.strip()]
            self.history = [e for e in kept if e["step"] <= self.step]
            write_text(hist, "".join(json.dumps(e) + "\n" for e in self.history))

    # -- the run --------------------------------------------------------------------------------------------------

    def fit(self, resume: bool = True) -> TrainResult:
        self.out.mkdir(parents=True, exist_ok=True)
        write_text(self.out / "config.yaml", dump_yaml(self.cfg))
        plan = build_plan(self.sampler, self.steps * self.cfg.optim.grad_accum)
        self.plan_hash = plan_hash(plan)
        write_plan(plan, self.out / "plan.parquet")
        # With no step to take (max_steps 0: a sweep's untrained reference) the teacher is never asked, and there is
        # no plan to describe.
        precompute = getattr(self.teacher, "precompute", None) if self.steps else None
        if precompute is not None:
            # Encode every training text once, length-sorted, instead of a few per step.
            qids, q_texts, pids, p_texts = self.data.training_texts()
            precompute(qids, q_texts, "query")
            precompute(pids, p_texts, "passage")
        if self.teacher is not None and self.steps:
            self.teacher.calibrate()  # once, now that the teacher's vectors are cached
        if self.steps:
            self.plan_stats = plan_statistics(self.sampler, self.steps * self.cfg.optim.grad_accum)
            for r in self.reporters:
                r.on_eval(0, "plan", plan_metrics(self.plan_stats))
        if resume and (self.out / CHECKPOINT / STATE).is_file():
            self.load_checkpoint(self.out / CHECKPOINT)
        elif (self.out / HISTORY).exists():
            (self.out / HISTORY).unlink()
        if self.dev is not None and self.cfg.eval.at_start and self.step == 0:
            self._eval_dev()

        bar = None
        if self.cfg.progress:
            bar = tqdm(total=self.steps, initial=self.step, desc=f"train {self.cfg.name}", unit="step")
        window: list[dict] = []
        t0 = time.perf_counter()
        while self.step < self.steps:
            logs = self.train_step()
            window.append(logs)
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            if self.step % self.cfg.log_every == 0 or self.step == self.steps:
                mean = {k: float(np.mean([w[k] for w in window if k in w])) for k in window[-1]}
                # Of the window's mean losses, not a mean of per-step ratios (a step with a tiny L_pair would rule).
                if mean["loss_pair"] > 0:
                    mean["loss_ratio"] = self.cfg.alpha * mean["loss_inbatch"] / mean["loss_pair"]
                mean["step_seconds"] = (time.perf_counter() - t0) / len(window)
                mean["epoch"] = self.sampler.epoch + self.sampler.batch_in_epoch / self.sampler.batches_per_epoch
                self._record({"step": self.step, "split": "train", **mean})
                for r in self.reporters:
                    r.on_log(self.step, mean)
                window, t0 = [], time.perf_counter()
            if self.dev is not None and self.cfg.eval.every and self.step % self.cfg.eval.every == 0:
                self._eval_dev()
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.steps:
                self.save_checkpoint()
        if bar:
            bar.close()
        if self.dev is not None and self.cfg.eval.every and self.steps % self.cfg.eval.every != 0:
            self._eval_dev()  # the last steps would otherwise never compete for "best"
        final = self.out / "model"
        with atomic_dir(final) as tmp:
            self.student.save(tmp)
        return TrainResult(self.steps, self.best_step, self.best_metric, self.plan_hash, final, self.history)
