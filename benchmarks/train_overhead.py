"""Training-loop overhead against a bare forward/backward/step, and the cost of attention dropout.

    python benchmarks/train_overhead.py [--model minilm-l6] [--steps 8] [--batch-size 32]

"full" is Trainer.train_step: draw a batch from the TAS-Balanced sampler, look up texts and teacher
scores, tokenize (collate), forward, Margin-MSE, backward, clip, AdamW step, scheduler step.
"bare" is forward, the same loss, backward and AdamW step on tensors tokenized in advance for the
very same batches, so the difference is the loop's own overhead. alpha = 0 isolates the loop (the
in-batch teacher is part of the method, not overhead; its cost is reported separately).
Synthetic queries (~30 tokens) and passages (~200 tokens), as the paper's q/p lengths.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import pandas as pd
import torch

from tasb_ray.config import from_dict
from tasb_ray.fileio import write_text
from tasb_ray.losses import margin_mse
from tasb_ray.training.config import TrainingConfig
from tasb_ray.training.trainer import TrainData, Trainer


def synthetic(n_queries: int, seed: int = 0) -> TrainData:
    rng = np.random.default_rng(seed)
    vocab = [w for w in "the of and to in is was for on that with as by at from it an be this are".split()] + \
            [f"term{i}" for i in range(3000)]
    words = lambda n: " ".join(rng.choice(vocab, n))  # noqa: E731
    queries = {f"q{i}": words(22) for i in range(n_queries)}
    passages = {f"p{i}": words(160) for i in range(n_queries * 4)}
    rows = [(q, f"p{4 * i}", f"p{4 * i + j}", float(rng.normal(2, 1)), float(rng.normal(0, 1)))
            for i, q in enumerate(queries) for j in (1, 2, 3)]
    pairs = pd.DataFrame(rows, columns=["qid", "pos_pid", "neg_pid", "pos_score", "neg_score"])
    clusters = pd.DataFrame({"qid": list(queries), "cluster": [i % 8 for i in range(n_queries)]})
    return TrainData(pairs, queries, passages, clusters)


def timed(fn, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU work is asynchronous: time it to completion
        out.append(time.perf_counter() - t)
    return out


def measure(model: str, batch_size: int, steps: int, attention_dropout: float) -> dict:
    cfg = from_dict(TrainingConfig, {
        "alpha": 0.0, "progress": False,
        "student": {"model": model, "query_max_len": 30, "passage_max_len": 200,
                    "attention_dropout": attention_dropout},
        "sampler": {"sampling": "tas-balanced", "batch_size": batch_size},
        "optim": {"max_steps": 10_000}})
    data = synthetic(batch_size * 8)
    trainer = Trainer(cfg, data, "/tmp/tasb-overhead")
    trainer.train_step()  # warm-up: allocator, first-call costs

    # The bare loop replays the batches the full loop will draw, tokenized in advance.
    sampler = trainer.sampler.fork()
    batches = [next(sampler) for _ in range(steps)]
    student, opt = trainer.student, trainer.optimizer
    pre = []
    dev = trainer.device
    for b in batches:
        q = student.tokenize([data.query_text[x] for x in b.qids], "query")
        p = student.tokenize([data.passage_text[x] for x in b.pos_pids + b.neg_pids], "passage")
        pre.append(({k: v.to(dev) for k, v in q.items()}, {k: v.to(dev) for k, v in p.items()},
                    torch.tensor(b.pos_scores, dtype=torch.float32, device=dev),
                    torch.tensor(b.neg_scores, dtype=torch.float32, device=dev)))
    it = iter(pre)

    def bare():
        q, p, tp, tn = next(it)
        with trainer._autocast():   # the same precision as train_step (bf16/fp16 autocast on CUDA)
            qv, pv = student(**q), student(**p)
            n = len(tp)
            loss = margin_mse((qv * pv[:n]).sum(-1).float(), (qv * pv[n:]).sum(-1).float(), tp, tn)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    full_t = timed(trainer.train_step, steps)
    bare_t = timed(bare, steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return {"attention_dropout": attention_dropout, "peak_gib": peak, "full_s": statistics.median(full_t),
            "bare_s": statistics.median(bare_t), "full_mean": statistics.mean(full_t), "bare_mean": statistics.mean(bare_t)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", default="benchmarks/results/train_overhead.md")
    args = ap.parse_args()
    rows = [measure(args.model, args.batch_size, args.steps, d) for d in (0.0, 0.1)]
    lines = [f"Command: `python benchmarks/train_overhead.py --model {args.model} --steps {args.steps} "
             f"--batch-size {args.batch_size}` ({platform.machine()}, {os.cpu_count()} cores, "
             f"torch threads {torch.get_num_threads()}, {'CUDA' if torch.cuda.is_available() else 'CPU'})", "",
             "| attention dropout | bare step s (median) | full train_step s (median) | overhead | peak CUDA memory GiB |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['attention_dropout']} | {r['bare_s']:.3f} | {r['full_s']:.3f} | "
                     f"{100 * (r['full_s'] - r['bare_s']) / r['bare_s']:+.1f}% | {r['peak_gib']:.2f} |")
    write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
