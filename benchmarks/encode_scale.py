"""``tasb-ray encode-corpus`` over the synthetic MS MARCO collection: per-shard throughput, RSS over time (issue 13).

    python benchmarks/encode_scale.py --data /tmp/scale2/root/scale-0.1/data --cache /tmp/encscale/cache \\
        --work /tmp/encscale [--shard-rows 10000] [--interval 5] [--out benchmarks/results/encode_scale.md]

Runs the command line a user would (``python -m tasb_ray.cli encode-corpus --dataset DATA --cache-dir CACHE
--model TINY --out WORK/emb --no-progress``, niced) with the tiny random BERT of the tests
(:func:`tasb_ray.models.tiny.build_tiny_bert`: 2 layers, hidden 128, MiniLM tokenizer, its own passage max length
64) and the default actor pool. Every ``--interval`` seconds it samples, from /proc, the summed VmRSS of the
command and every process it started (Ray's GCS, raylet, workers, the encoder actors), the driver's own VmRSS, and
the shards on disk. Afterwards, per shard: the interval between consecutive shard files (their mtimes: a shard is
renamed into place once all its rows are in) gives its throughput.

The extrapolation to 8,841,823 passages is linear: start-up (command start to first shard) + rows / the median
per-shard throughput. RSS is "flat" when the summed RSS in the last quarter of the shards is within a few percent
of that in the second quarter (after the actors warmed up); the table gives both and the slope per 100k rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from encode import _cmdline, _status_kib, descendants
from machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
MSMARCO_PASSAGES = 8_841_823


ROLES = ("driver", "raylet", "gcs", "actors", "other")


def _role(pid: int, driver: int) -> str:
    if pid == driver:
        return "driver"
    cmd = _cmdline(pid)
    if "raylet" in cmd:
        return "raylet"
    if "gcs_server" in cmd:
        return "gcs"
    # A Ray worker that became an actor renames itself after the actor class (ray::MapWorker(...EncoderActor)).
    return "actors" if "EncoderActor" in cmd or "MapWorker" in cmd else "other"


def sample(proc: subprocess.Popen, out_dir: Path, t0: float) -> dict:
    """Summed VmRSS of the command's process tree, and per role its anonymous (heap) and shared-memory RSS: Ray's
    object store is shared memory mapped by the raylet and every worker, so summed VmRSS counts its pages once per
    process that touched them."""
    pids = [proc.pid] + descendants(proc.pid)
    shards = len(list(out_dir.glob("shard-*.parquet"))) if out_dir.is_dir() else 0
    by_role = {f"{r}_{kind}": 0.0 for r in ROLES for kind in ("anon", "shmem")}
    for p in pids:
        role = _role(p, proc.pid)
        by_role[f"{role}_anon"] += _status_kib(p, "RssAnon") / 1024
        by_role[f"{role}_shmem"] += _status_kib(p, "RssShmem") / 1024
    return {"t": round(time.perf_counter() - t0, 2), "tree_mib": sum(_status_kib(p, "VmRSS") for p in pids) / 1024,
            "driver_mib": _status_kib(proc.pid, "VmRSS") / 1024, "anon_mib": sum(by_role[f"{r}_anon"] for r in ROLES),
            "processes": len(pids), "shards": shards, **by_role}


def run(args) -> dict:
    from tasb_ray.models.tiny import build_tiny_bert

    work = Path(args.work)
    model = work / "tiny-bert"
    if not (model / "config.json").is_file():
        build_tiny_bert(model)
    out_dir = work / "emb"
    if args.overwrite and out_dir.exists():
        shutil.rmtree(out_dir)  # before the start: the samples count the shards on disk
    cmd = ["nice", "-n", "10", sys.executable, "-m", "tasb_ray.cli", "encode-corpus", "--dataset", args.data,
           "--cache-dir", args.cache, "--model", str(model), "--out", str(out_dir), "--shard-rows",
           str(args.shard_rows), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    samples = []
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    started = time.time()
    with open(work / "encode.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        while proc.poll() is None:
            samples.append(sample(proc, out_dir, t0))
            time.sleep(args.interval)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"encode-corpus failed ({proc.returncode}); see {work / 'encode.log'}")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    mtimes = np.array([(out_dir / s["file"]).stat().st_mtime for s in manifest["shards"]])
    rows = np.array([s["rows"] for s in manifest["shards"]])
    order = np.argsort(mtimes)
    gaps = np.diff(mtimes[order])
    per_shard = rows[order][1:] / np.maximum(gaps, 1e-6)
    return {"cmd": cmd, "samples": samples, "wall_s": wall, "started": started, "manifest": manifest,
            "first_shard_s": float(mtimes.min() - started), "per_shard": per_shard, "load_before": load_before,
            "load_after": os.getloadavg(), "log_tail": (work / "encode.log").read_text()[-1500:]}


def _quarter(samples: list[dict], n_shards: int, lo: float, hi: float) -> float:
    picked = [s["tree_mib"] for s in samples if lo * n_shards <= s["shards"] < hi * n_shards]
    return float(np.mean(picked)) if picked else float("nan")


def report(args, r: dict) -> str:
    m = r["manifest"]
    n, shards = m["rows"], len(m["shards"])
    ps = r["per_shard"]
    med = float(np.median(ps))
    steady_s = n / med
    extrap = r["first_shard_s"] + MSMARCO_PASSAGES / med
    s = r["samples"]
    tree = np.array([x["tree_mib"] for x in s])
    done = np.array([x["shards"] for x in s]) * m["shard_rows"]
    warm = done >= 0.25 * n
    slope = float(np.polyfit(done[warm], tree[warm], 1)[0] * 100_000) if warm.sum() > 2 else float("nan")
    q2, q4 = _quarter(s, shards, 0.25, 0.5), _quarter(s, shards, 0.75, 1.01)
    anon = np.array([x.get("anon_mib", np.nan) for x in s])
    anon_slope = float(np.polyfit(done[warm], anon[warm], 1)[0] * 100_000) if warm.sum() > 2 else float("nan")
    running = [x for x in s if x["shards"] < shards]  # before the command's own shutdown
    pool = m.get("last_run", {})
    lines = [
        "# encode-corpus at scale: synthetic MS MARCO, tiny random BERT", "",
        f"Command: `{shlex.join(r['cmd'])}`, run by `nice -n 10 python benchmarks/encode_scale.py "
        f"{' '.join(args.argv)}`  ",
        f"Machine: {describe_machine()}; shared with a CPU experiment that has priority (load average before "
        f"{r['load_before'][0]:.2f} / {r['load_before'][1]:.2f} / {r['load_before'][2]:.2f}, after "
        f"{r['load_after'][0]:.2f} / {r['load_after'][1]:.2f} / {r['load_after'][2]:.2f}): the throughput is what "
        "the niced job got, about half the machine or less.  ",
        f"Model: the tests' tiny random BERT (2 layers, hidden 128, dim {m['dim']}, passage max length "
        f"{m['encoder']['passage_max_len']}); default actor pool; {shards} shards of {m['shard_rows']:,} rows.", "",
        "| passages | wall s | start-up to first shard s | per-shard passages/s: median (p10 / p90) | "
        "steady s (rows / median) | shards encoded / reused |",
        "|---:|---:|---:|---|---:|---|",
        f"| {n:,} | {r['wall_s']:.0f} | {r['first_shard_s']:.1f} | {med:.0f} ({np.percentile(ps, 10):.0f} / "
        f"{np.percentile(ps, 90):.0f}) | {steady_s:.0f} | {pool.get('encoded_shards')} / {pool.get('reused_shards')} |",
        "",
        f"**Linear extrapolation to the full collection ({MSMARCO_PASSAGES:,} passages)**: start-up "
        f"{r['first_shard_s']:.0f} s + {MSMARCO_PASSAGES:,} / {med:.0f} passages/s = **{extrap / 3600:.1f} h** on this "
        f"share of this machine; the shards would take {MSMARCO_PASSAGES * m['dim'] * 4 / 2**30:.1f} GiB "
        f"(float32 x {m['dim']}).", "",
        "## RSS over time (summed VmRSS of the command and every process it started; the driver alone)", "",
        f"Mean summed RSS while shards 25-50 % were written: {q2:.0f} MiB; while 75-100 % were written: {q4:.0f} MiB "
        f"({(q4 - q2) / q2 * 100:+.1f} %). Slope after the first quarter: {slope:+.1f} MiB per 100k passages. "
        f"Peak summed {tree.max():.0f} MiB, peak driver {max(x['driver_mib'] for x in s):.0f} MiB. Anonymous memory "
        f"alone (heaps, summed over the processes; no shared page counted twice): slope {anon_slope:+.1f} MiB per "
        "100k passages.", "",
        "Per role, anonymous / shared-memory RSS in MiB (shared memory is mostly Ray's object store, mapped by the "
        "raylet and the workers that read or wrote a block):", "",
        "| t s | shards on disk | passages done | summed VmRSS | " + " | ".join(ROLES) + " | processes |",
        "|---:|---:|---:|---:|" + "---|" * len(ROLES) + "---:|",
    ]
    step = max(1, len(running) // 24)
    for x in running[::step] + ([running[-1]] if (len(running) - 1) % step else []):
        roles = " | ".join(f"{x.get(r + '_anon', 0):.0f} / {x.get(r + '_shmem', 0):.0f}" for r in ROLES)
        lines.append(f"| {x['t']:.0f} | {x['shards']} | {min(n, x['shards'] * m['shard_rows']):,} | "
                     f"{x['tree_mib']:.0f} | {roles} | {x['processes']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="the synthetic MS MARCO directory (benchmarks/msmarco_synth.py)")
    p.add_argument("--cache", required=True, help="prepared-dataset cache (--cache-dir of encode-corpus)")
    p.add_argument("--work", required=True, help="tiny model, embeddings and log go here")
    p.add_argument("--shard-rows", type=int, default=10_000)
    p.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--overwrite", action="store_true",
                   help="delete WORK/emb first and encode every shard again (else finished shards are kept)")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/encode_scale.md"))
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    Path(args.work).mkdir(parents=True, exist_ok=True)
    r = run(args)
    (Path(args.work) / "samples.json").write_text(json.dumps(r["samples"]))
    Path(args.out).write_text(report(args, r))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
