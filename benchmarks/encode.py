"""Corpus encoding on Ray Data (``encode_corpus``) against sentence-transformers in one process, and its memory.

    python benchmarks/encode.py [--dataset scifact] [--model minilm-l6] [--max-len 256] [--limit N]
                                [--memory-sizes 5000 50000] [--memory-model tiny] [--out benchmarks/results/encode.md]

Part 1, throughput on the same corpus, model and max length (passages/s):

* ``SentenceTransformer.encode`` (batch 64, its own length sorting), torch with one thread per core, after a
  warm-up call; the whole corpus once.
* ``encode_corpus`` with its default pool for the machine (CPU: one single-threaded actor per core). Steady
  throughput excludes start-up: rows / (end of the actors' last batch - start of their first batch), read from
  a timing wrapper around ``EncoderActor``. Also reported: rows/s between the first and the last shard
  written (``stats["steady_rows_per_s"]``; slightly optimistic, other actors work before the first shard is
  out), start-up (Ray, then pipeline until the first batch starts), and end to end.

Part 2, peak memory for two synthetic corpus sizes (each in a fresh subprocess with its own local Ray): the
driver's VmHWM, the encoder actors' VmHWM, and the peak over time of the summed VmRSS of the driver and every
process it started (Ray's GCS, raylet, workers), sampled from /proc every 0.2 s (psutil is not installed).
The ratio between sizes tells whether memory grows with the corpus (it should not: the driver holds about one
shard).

Writes a markdown table (command, machine, load) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from machine import describe_machine

HERE = Path(__file__).resolve().parent


# --- /proc helpers -----------------------------------------------------------------------------------------


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def descendants(root: int) -> list[int]:
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], [root]
    while stack:
        for c in children.get(stack.pop(), []):
            out.append(c)
            stack.append(c)
    return out


class MemorySampler:
    """Samples the driver and all its descendants: peak summed VmRSS, per-process VmHWM."""

    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.peak_total_kib = 0
        self.hwm: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = os.getpid()
        pids = [me] + descendants(me)
        total = 0
        for pid in pids:
            total += _status_kib(pid, "VmRSS")
            hwm = _status_kib(pid, "VmHWM")
            if hwm > self.hwm.get(pid, 0):
                self.hwm[pid] = hwm
            name = _cmdline(pid)
            if name:  # a Ray worker renames itself when it becomes an actor
                self.names[pid] = name[:80]
        self.peak_total_kib = max(self.peak_total_kib, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


# --- data --------------------------------------------------------------------------------------------------


def write_beir_subset(root: Path, doc_ids, texts) -> Path:
    """A BEIR directory holding these passages (text only) and one test judgement."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    with open(root / "corpus.jsonl", "w") as f:
        for d, t in zip(doc_ids, texts):
            f.write(json.dumps({"_id": str(d), "title": "", "text": t}) + "\n")
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "a query"}) + "\n")
    (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq0\t{doc_ids[0]}\t1\n")
    return root


def synthetic_passages(n: int, seed: int = 0, words: int = 60) -> list[str]:
    rng = np.random.default_rng(seed)
    vocab = np.array(("cell protein gene expression tumor patient study clinical trial risk heart brain neuron "
                      "dose effect cohort analysis model receptor pathway signal immune response virus "
                      "bacteria growth factor level increase decrease association treatment outcome").split())
    lengths = rng.integers(words // 2, words * 3 // 2, size=n)
    return [" ".join(vocab[rng.integers(0, len(vocab), size=k)]) for k in lengths]


# --- part 1 ------------------------------------------------------------------------------------------------


def throughput(args, tmp: Path) -> dict:
    import torch

    import tasb_ray.distributed.encode as enc
    import tasb_ray.distributed.ray_data as rd
    from tasb_ray.data import prepare_dataset
    from tasb_ray.distributed.runtime import init_ray
    from tasb_ray.models.registry import resolve_model

    ds = prepare_dataset(args.dataset, cache_dir=args.cache_dir)
    corpus = ds.corpus()
    if args.limit:
        corpus = corpus.head(args.limit)
        ds = prepare_dataset(str(write_beir_subset(tmp / "subset", corpus["doc_id"].tolist(),
                                                   corpus["text"].tolist())), cache_dir=tmp / "cache")
    texts = corpus["text"].tolist()
    path = resolve_model(args.model)
    cores = os.cpu_count() or 1

    t = time.perf_counter()
    init_ray(num_cpus=cores, temp_dir=tmp / "ray")
    ray_start = time.perf_counter() - t

    # Baseline: sentence-transformers in this process, one torch thread per core.
    from sentence_transformers import SentenceTransformer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(cores)
    t = time.perf_counter()
    st = SentenceTransformer(path, device=device)
    st.max_seq_length = args.max_len
    st_load = time.perf_counter() - t
    st.encode(texts[:64], batch_size=64)  # warm-up
    t = time.perf_counter()
    st_vec = st.encode(texts, batch_size=64, convert_to_numpy=True)
    st_s = time.perf_counter() - t
    st_half_s = None
    if device == "cuda":
        # encode_corpus runs float16 autocast on CUDA; sentence-transformers in float32 would be an unfair baseline.
        st.half()
        st.encode(texts[:64], batch_size=64)
        torch.cuda.synchronize()
        t = time.perf_counter()
        st.encode(texts, batch_size=64, convert_to_numpy=True)
        st_half_s = time.perf_counter() - t
    del st
    if device == "cuda":
        torch.cuda.empty_cache()
    torch.set_num_threads(1)  # the driver only writes shards while the actors encode

    # Ray Data path, with a wrapper that logs when each actor batch starts and ends.
    log_dir = tmp / "calls"
    log_dir.mkdir()

    class TimedEncoderActor(rd.EncoderActor):
        def __call__(self, batch):
            start = time.time()
            out = super().__call__(batch)
            with open(log_dir / f"{os.getpid()}.jsonl", "a") as f:
                f.write(json.dumps({"start": start, "end": time.time(), "rows": batch.num_rows}) + "\n")
            return out

    # The name the Ray Data pipeline looks up (tasb_ray.distributed.ray_data._stream) is the one to replace.
    original = rd.EncoderActor
    rd.EncoderActor = TimedEncoderActor
    stats: dict = {}
    try:
        call_start = time.time()
        t = time.perf_counter()
        out = enc.encode_corpus(ds, path, tmp / "emb", passage_max_len=args.max_len, batch_size=64,
                                shard_rows=args.shard_rows, show_progress=False, stats=stats)
        wall = time.perf_counter() - t
    finally:
        rd.EncoderActor = original
    calls = [json.loads(line) for p in log_dir.iterdir() for line in p.read_text().splitlines()]
    busy = max(c["end"] for c in calls) - min(c["start"] for c in calls)
    rows = sum(c["rows"] for c in calls)
    _, vectors = enc.load_embeddings(out)
    cos = (vectors * st_vec).sum(1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(st_vec, axis=1))
    manifest = enc.read_manifest(out)
    return {
        "passages": len(texts), "model": args.model, "max_len": args.max_len, "cores": cores,
        "device": device, "st_load_s": st_load, "st_s": st_s,
        # the faster of float32 and float16 sentence-transformers: the baseline to beat
        "st_rate": len(texts) / min(st_s, st_half_s or st_s), "st_fp32_rate": len(texts) / st_s,
        "st_fp16_rate": len(texts) / st_half_s if st_half_s else None, "actor_pool": stats.get("actor_pool"),
        "actors_saw": stats.get("actors_saw"),
        "ray_start_s": ray_start, "pipeline_startup_s": min(c["start"] for c in calls) - call_start,
        "ray_busy_s": busy, "ray_rate": rows / busy, "ray_shard_rate": stats.get("steady_rows_per_s"),
        "ray_wall_s": wall, "ray_e2e_rate": len(texts) / wall, "pool": enc.cpu_pool(cores)[:2],
        "actors_used": len({p.name for p in log_dir.iterdir()}),
        "batches": len(calls), "shards": len(manifest["shards"]), "min_cosine_vs_st": float(cos.min()),
    }


# --- part 2 ------------------------------------------------------------------------------------------------


def memory_child(n: int, model: str, tmp: Path) -> dict:
    """Runs in a fresh process: synthetic corpus of ``n`` passages, local Ray, encode, report memory."""
    from tasb_ray.data import prepare_dataset
    from tasb_ray.distributed.encode import encode_corpus
    from tasb_ray.distributed.runtime import init_ray

    if model == "tiny":
        from tasb_ray.models.tiny import build_tiny_bert

        model = str(build_tiny_bert(tmp / "tiny"))
    texts = synthetic_passages(n)
    ds = prepare_dataset(str(write_beir_subset(tmp / "beir", [f"d{i}" for i in range(n)], texts)),
                         cache_dir=tmp / "cache")
    del texts
    init_ray(num_cpus=os.cpu_count() or 1, temp_dir=tmp / "ray")
    stats: dict = {}
    with MemorySampler() as mem:
        t = time.perf_counter()
        encode_corpus(ds, model, tmp / "emb", show_progress=False, stats=stats)
        wall = time.perf_counter() - t
    actors = [h for pid, h in mem.hwm.items() if "EncoderActor" in mem.names.get(pid, "")]
    return {"passages": n, "wall_s": wall, "driver_hwm_mib": _status_kib(os.getpid(), "VmHWM") / 1024,
            "actor_hwm_mib": max(actors) / 1024 if actors else float("nan"), "actors": len(actors),
            "peak_total_rss_mib": mem.peak_total_kib / 1024, "shards": stats.get("encoded_shards")}


def memory(args) -> list[dict]:
    results = []
    for n in args.memory_sizes:
        with tempfile.TemporaryDirectory(prefix="tasb-enc-mem-") as tmp:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n),
                   "--memory-model", args.memory_model, "--tmp", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not line:
                sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
                raise SystemExit(f"memory run for {n} passages failed (exit {proc.returncode})")
            results.append(json.loads(line[-1]))
            print(f"memory {n}: {results[-1]}", flush=True)
    return results


# --- report ------------------------------------------------------------------------------------------------


def report(args, tp: dict | None, mem: list[dict] | None, load_before, load_after) -> str:
    import ray
    import torch

    lines = ["# Corpus encoding: Ray Data `encode_corpus` vs sentence-transformers, and memory", "",
             f"Command: `{' '.join(shlex.quote(a) for a in ['python'] + sys.argv)}`  ",
             f"Machine: {describe_machine(gpu=None)}  ",
             f"Versions: ray {ray.__version__}, torch {torch.__version__}  ",
             f"Load average (1/5/15 min) before: {' / '.join(f'{x:.2f}' for x in load_before)}, after: "
             f"{' / '.join(f'{x:.2f}' for x in load_after)}", ""]
    if load_before[0] >= 1.0:
        lines += ["**The machine was busy (load >= 1): throughput numbers are not representative (memory is not affected by load).**", ""]
    if tp:
        ratio = tp["ray_rate"] / tp["st_rate"]
        lines += [f"## Throughput: {tp['passages']} passages, {tp['model']}, max length {tp['max_len']}", "",
                  "| path | passages/s (steady) | start-up s | notes |", "|---|---:|---:|---|",
                  f"| sentence-transformers `encode` on {tp['device']}, {tp['cores']} torch threads | "
                  f"{tp['st_rate']:.1f} | {tp['st_load_s']:.1f} (model load) | float32 {tp['st_fp32_rate']:.1f}/s"
                  + (f", float16 {tp['st_fp16_rate']:.1f}/s" if tp.get("st_fp16_rate") else "") + " |",
                  f"| `encode_corpus`, {tp['pool'][0]} actors x {tp['pool'][1]} thread(s) ({tp['actors_used']} got work)"
                  f" | {tp['ray_rate']:.1f} | {tp['ray_start_s']:.1f} (Ray) + {tp['pipeline_startup_s']:.1f} "
                  f"(pipeline to first batch) | {tp['batches']} batches, {tp['shards']} shards; "
                  f"{tp['ray_e2e_rate']:.1f}/s end to end ({tp['ray_wall_s']:.1f} s); first-to-last shard "
                  f"{tp['ray_shard_rate'] or float('nan'):.1f}/s |", "",
                  f"Actor pool: {tp['actor_pool']}; the actors saw (device|GPU ids|CUDA_VISIBLE_DEVICES): "
                  f"{tp['actors_saw']}.", "",
                  f"Steady ratio Ray / sentence-transformers: **{ratio:.2f}** (target >= 0.9). "
                  f"Lowest cosine between the two paths' vectors: {tp['min_cosine_vs_st']:.6f}.", ""]
    if mem:
        a, b = mem[0], mem[-1]
        lines += [f"## Peak memory: {a['passages']} vs {b['passages']} synthetic passages "
                  f"(model `{args.memory_model}`)", "",
                  "| passages | driver VmHWM MiB | encoder actor VmHWM MiB (max of n) | peak summed RSS, driver + Ray "
                  "processes MiB | encode s |", "|---:|---:|---:|---:|---:|"]
        for m in mem:
            lines.append(f"| {m['passages']} | {m['driver_hwm_mib']:.0f} | {m['actor_hwm_mib']:.0f} "
                         f"(n={m['actors']}) | {m['peak_total_rss_mib']:.0f} | {m['wall_s']:.1f} |")
        lines += ["", f"Ratio {b['passages']} / {a['passages']}: summed RSS "
                  f"**{b['peak_total_rss_mib'] / a['peak_total_rss_mib']:.2f}**, driver "
                  f"{b['driver_hwm_mib'] / a['driver_hwm_mib']:.2f}, actor "
                  f"{b['actor_hwm_mib'] / a['actor_hwm_mib']:.2f} (target <= 1.3).", "",
                  "Summed RSS counts shared pages (libraries, the object store) once per process, so it is an "
                  "upper bound of the footprint; what matters is that it does not grow with the corpus.", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="scifact")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--model", default="minilm-l6")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="only the first N passages (smoke runs)")
    p.add_argument("--shard-rows", type=int, default=500, help="shard size of the throughput run")
    p.add_argument("--memory-sizes", type=int, nargs="+", default=[5000, 50000])
    p.add_argument("--memory-model", default="tiny", help="'tiny' (random 2-layer BERT) or a model name/path")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "encode.md"))
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.memory_model, Path(args.tmp))), flush=True)
        return 0

    load_before = os.getloadavg()
    mem = None if args.skip_memory else memory(args)  # subprocesses first: the parent's Ray would count in /proc
    tp = None
    if not args.skip_throughput:
        with tempfile.TemporaryDirectory(prefix="tasb-enc-bench-") as tmp:
            tp = throughput(args, Path(tmp))
            print(f"throughput: {tp}", flush=True)
            import ray

            ray.shutdown()
    text = report(args, tp, mem, load_before, os.getloadavg())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
