"""The in-batch bi-encoder teacher's memory at MS MARCO size: memory-mapped .npy vectors vs vectors held in RAM.

    python benchmarks/inbatch_memory.py [--mmap-rows 250000,1000000,8841823] [--ram-rows 250000,1000000,2000000]
        [--batches 200] [--query-rows 100000] [--dir /work/inbatch-bench] [--keep]

Synthetic vectors (384 dimensions, all-MiniLM-L6-v2's width; MS MARCO has 8,841,823 passages) are written once per
corpus size as the teacher-vectors stage's ``.npy`` files by the stage's own writers
(:mod:`tasb_ray.teachers.vector_store`: the float16 matrix streamed 65,536 rows at a time, sorted ids, rows), plus
100,000 query vectors (``--query-rows``), each store in a process of its own. Every run is a fresh
process that builds the default bi-encoder teacher (``minilm-l6``, cosine) and scores ``--batches`` in-batch
matrices of 32 queries x 64 passages drawn at random (seed 0) through ``BiEncoderTeacher.score_matrix``, the call
the trainer makes; encoding is disabled, so every vector comes from the store. Paths:

* ``mmap``: ``BiEncoderTeacher.map_vectors`` (what a run does now), float16 files memory-mapped. Run twice: ``cold``
  after dropping the files' pages from the page cache (``posix_fadvise(DONTNEED)``, no root needed), then ``warm``;
* ``ram``: ``BiEncoderTeacher.load_vectors`` with the whole matrix as float32 and the ids as strings (what a run
  did before: the stage's vectors loaded into RAM), at sizes that fit this machine.

Peak RSS is the child's ``VmHWM`` (the high-water RSS of its own address space); ``ru_maxrss`` is reported beside
it because on Linux a child started by ``subprocess`` (vfork + exec) inherits the parent's high-water mark in
``ru_maxrss``, which is why no store is written in the driver. ``RssAnon`` / ``RssFile`` are read from
``/proc/self/status`` after the last batch. Pages of a mapped file that the process touched count in its RSS (as
``RssFile``) although the kernel can drop them at any time; the page cache beyond them belongs to no process.
Writes ``benchmarks/results/inbatch_memory.md`` and deletes the files unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import command_line, describe_machine, load_line

HERE = Path(__file__).resolve().parent
DIM = 384
QUERIES = 100_000  # default query vectors beside the passages
Q_PER_BATCH, P_PER_BATCH = 32, 64
MSMARCO_PASSAGES = 8_841_823
CHUNK = 1 << 16


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def _ids(n: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.cast(pa.array(__import__("numpy").arange(n, dtype="int64")), pa.string())  # MS MARCO's: "0".."N-1"


def write_store(directory: Path, kind: str, n: int, seed: int) -> float:
    """The .npy files of ``n`` synthetic float16 vectors of ``kind``; seconds taken."""
    import numpy as np

    from tasb_ray.teachers.vector_store import vector_paths, write_keys, write_matrix

    t0 = time.perf_counter()
    matrix, keys, rows = vector_paths(directory, kind, "float16")
    write_keys(keys, rows, _ids(n))
    rng = np.random.default_rng(seed)
    chunks = (rng.standard_normal((min(CHUNK, n - s), DIM), dtype=np.float32) for s in range(0, n, CHUNK))
    write_matrix(matrix, n, DIM, "float16", chunks)
    return time.perf_counter() - t0


def drop_cache(directory: Path) -> None:
    """Ask the kernel to drop the clean cached pages of every file in ``directory`` (unprivileged)."""
    for p in directory.iterdir():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _child(mode: str, passages: str, queries: str, batches: int) -> None:
    import numpy as np

    from tasb_ray.teachers.bi_encoder import BiEncoderTeacher
    from tasb_ray.teachers.vector_store import vector_paths

    teacher = BiEncoderTeacher("minilm-l6", similarity="cosine")  # the default teachers' bi-encoder member

    def no_encoding(texts, kind):
        raise AssertionError(f"encoded {len(texts)} {kind} texts: the store should hold every id")

    teacher.encode = no_encoding
    before = _status()
    start = before["VmRSS"]
    t0 = time.perf_counter()
    sizes = {}
    for kind, d in (("passage", passages), ("query", queries)):
        if mode == "mmap":
            teacher.map_vectors(kind, d, "float16")
        else:
            stored = np.load(vector_paths(d, kind, "float16")[0], mmap_mode="r")
            matrix = np.empty(stored.shape, dtype=np.float32)  # filled a chunk at a time: no float16 copy in RAM
            for s in range(0, len(stored), CHUNK):
                matrix[s:s + CHUNK] = stored[s:s + CHUNK]
            del stored
            teacher.load_vectors(kind, _ids(len(matrix)).to_pylist(), matrix)
            del matrix
        sizes[kind] = len(teacher._loaded[kind])
    load_s = time.perf_counter() - t0
    loaded = _status()["VmRSS"]
    rng = np.random.default_rng(0)
    times = []
    for _ in range(batches):
        q = rng.integers(0, sizes["query"], Q_PER_BATCH)
        p = rng.integers(0, sizes["passage"], P_PER_BATCH)
        qids, pids = [str(i) for i in q], [str(i) for i in p]
        t = time.perf_counter()
        scores = teacher.score_matrix(qids, [""] * len(qids), pids, [""] * len(pids))
        times.append(time.perf_counter() - t)
        assert scores.shape == (Q_PER_BATCH, P_PER_BATCH) and np.isfinite(scores).all()
    end = _status()
    print(json.dumps({"rows": sizes["passage"], "load_s": load_s, "start_mib": start, "loaded_mib": loaded,
                      "peak_mib": end["VmHWM"], "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "anon_mib": end["RssAnon"] - before["RssAnon"], "file_mib": end["RssFile"] - before["RssFile"],
                      "times": times}))


def _subprocess(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run(mode: str, passages: Path, queries: Path, batches: int) -> dict:
    return _subprocess("--child", mode, "--passages", str(passages), "--queries", str(queries),
                       "--batches", str(batches))


def _write(directory: Path, kind: str, n: int, seed: int) -> dict:
    return _subprocess("--write", kind, "--dir", str(directory), "--rows", str(n), "--seed", str(seed))


def _row(label: str, cache: str, size_gb: float | None, r: dict) -> str:
    ms = [t * 1000 for t in r["times"]]
    rest = sorted(ms[1:])
    p95 = rest[int(0.95 * (len(rest) - 1))] if rest else float("nan")
    disk = f"{size_gb:.2f}" if size_gb is not None else "-"
    return (f"| {label} | {r['rows']:,} | {disk} | {cache} | {r['load_s']:.1f} | {r['start_mib']:.0f} | "
            f"{r['loaded_mib']:.0f} | {r['peak_mib']:.0f} | {r['peak_mib'] - r['start_mib']:.0f} | "
            f"{r['maxrss_mib']:.0f} | "
            f"{r['anon_mib']:.0f} / {r['file_mib']:.0f} | {ms[0]:.2f} | {statistics.median(rest):.3f} | {p95:.3f} |")


def reading(runs: list[tuple[str, str, dict]], batches: int) -> list[str]:
    """What the table shows, in numbers taken from it."""
    def over(r):
        return r["peak_mib"] - r["start_mib"]

    def median_ms(r):
        return statistics.median(r["times"][1:]) * 1000

    mmap = sorted((r for m, c, r in runs if m == "mmap" and c == "warm"), key=lambda r: r["rows"])
    cold = {r["rows"]: r for m, c, r in runs if m == "mmap" and c == "cold"}
    ram = sorted((r for m, _, r in runs if m == "ram"), key=lambda r: r["rows"])
    out = ["## Reading the table", ""]
    if len(mmap) >= 2:
        lo, hi = mmap[0], mmap[-1]
        out.append(f"- Memory-mapped: {over(lo):.0f} MiB over start at {lo['rows']:,} passages, {over(hi):.0f} MiB at "
                   f"{hi['rows']:,} ({hi['rows'] / lo['rows']:.3g}x the rows); no anonymous memory grows "
                   f"({max(r['anon_mib'] for r in mmap):.0f} MiB at most), the growth is `RssFile`: the pages of "
                   "the mapped files that the batches touched (passage and query rows, and the binary searches' "
                   "pages of the sorted ids, of which a larger corpus has more). It follows the rows read, not the "
                   "rows stored; a small file can show more, because on a fault the kernel also maps neighbouring "
                   "pages already in the page cache (fault-around), and more of a small file is cached.")
    if len(ram) >= 2:
        xs, ys = [r["rows"] / 1e6 for r in ram], [over(r) for r in ram]
        slope = statistics.linear_regression(xs, ys).slope
        steady = statistics.linear_regression(xs, [r["anon_mib"] for r in ram]).slope
        sizes = ", ".join(f"{over(r):.0f} MiB at {r['rows']:,}" for r in ram)
        out.append(f"- In RAM: {sizes} over start: "
                   f"{slope:.0f} MiB per million passages at the peak (least squares; float32 vectors, their "
                   f"normalised copy while loading, the string ids), {steady:.0f} MiB per million held after loading "
                   f"(`RssAnon` growth), i.e. a peak of ~{slope * MSMARCO_PASSAGES / 1e6 / 1024:.0f} GiB and "
                   f"~{steady * MSMARCO_PASSAGES / 1e6 / 1024:.0f} GiB held at {MSMARCO_PASSAGES:,} by "
                   "extrapolation (not run: it would not fit beside the CPU experiment).")
    if mmap and ram:
        m, r = mmap[-1], ram[-1]
        c = cold.get(m["rows"])
        out.append(f"- Per batch, warm page cache: {median_ms(m):.2f} ms median memory-mapped at {m['rows']:,} "
                   f"passages, {median_ms(r):.2f} ms in RAM at {r['rows']:,}"
                   + (f"; cold: {median_ms(c):.1f} ms (each row a read from disk)" if c else "") + ".")
    out.append(f"- Caveat: {batches} batches touch ~{batches * P_PER_BATCH:,} passage rows. Touched pages stay in the "
               "process's RSS while the file is mapped, so a whole MS MARCO epoch (15,717 batches x 64 passages, "
               "~1M rows over the file's ~1.66M pages) would map roughly 45% of the 6.8 GB file, ~3 GB (an "
               "estimate, not measured). Those are clean file pages the kernel reclaims under memory pressure and "
               "that every process mapping the file (Ray actors) shares, unlike the in-RAM path's anonymous memory.")
    return [*out, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mmap-rows", default=f"250000,1000000,{MSMARCO_PASSAGES}")
    ap.add_argument("--ram-rows", default="250000,1000000,2000000")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--query-rows", type=int, default=QUERIES, help=f"query vectors (default {QUERIES:,})")
    ap.add_argument("--dir", default="/work/inbatch-bench")
    ap.add_argument("--keep", action="store_true", help="keep the vector files")
    ap.add_argument("--out", default=str(HERE / "results" / "inbatch_memory.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--write", help=argparse.SUPPRESS)
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--passages", help=argparse.SUPPRESS)
    ap.add_argument("--queries", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.passages, args.queries, args.batches)
        return 0
    if args.write:
        seconds = write_store(Path(args.dir), args.write, args.rows, args.seed)
        print(json.dumps({"seconds": seconds, "peak_mib": _status()["VmHWM"]}))
        return 0

    from tasb_ray.fileio import atomic_path

    mmap_rows = [int(x) for x in args.mmap_rows.split(",") if x]
    ram_rows = [int(x) for x in args.ram_rows.split(",") if x]
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows, written, runs = [], [], []
    try:
        qdir = root / "queries"
        qdir.mkdir(exist_ok=True)
        _write(qdir, "query", args.query_rows, seed=1)
        for n in sorted(set(mmap_rows) | set(ram_rows)):
            d = root / f"passages-{n}"
            d.mkdir(exist_ok=True)
            w = _write(d, "passage", n, seed=2)
            size = (d / "passage.float16.npy").stat().st_size / 1e9
            written.append(f"{n:,} rows: {size:.2f} GB float16 matrix + "
                           f"{sum(p.stat().st_size for p in d.glob('passage.[kr]*.npy')) / 1e6:.0f} MB ids, "
                           f"written in {w['seconds']:.0f} s at {w['peak_mib']:.0f} MiB peak RSS")
            print(written[-1], file=sys.stderr)
            if n in mmap_rows:
                for cache in ("cold", "warm"):
                    if cache == "cold":
                        drop_cache(d)
                        drop_cache(qdir)
                    r = _run("mmap", d, qdir, args.batches)
                    runs.append(("mmap", cache, r))
                    rows.append(_row("mmap float16", cache, size, r))
                    print(rows[-1], file=sys.stderr)
            if n in ram_rows:
                r = _run("ram", d, qdir, args.batches)
                runs.append(("ram", "-", r))
                rows.append(_row("in RAM float32", "-", None, r))
                print(rows[-1], file=sys.stderr)
            if not args.keep:
                shutil.rmtree(d)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    cmd = command_line("benchmarks/inbatch_memory.py", argv)
    lines = [
        "# In-batch teacher memory: memory-mapped float16 vectors vs vectors in RAM (issue 13)", "",
        f"Command: `nice -n 10 {cmd}`  ",
        f"Machine: {describe_machine()}; shared with a long CPU experiment that had priority  ",
        load_line(load_before, load_after), "",
        (f"Each row is a fresh process: the default bi-encoder teacher (`minilm-l6`, cosine, {DIM} dimensions) "
         f"scores {args.batches} in-batch matrices of {Q_PER_BATCH} queries x {P_PER_BATCH} passages at random rows "
         f"(seed 0) through `BiEncoderTeacher.score_matrix`, with {args.query_rows:,} query vectors beside the "
         "passages (mapped or in RAM like them). `mmap float16` is `map_vectors` over the teacher-vectors stage's "
         "`.npy` files (what a run does now); `in RAM float32` is `load_vectors` with the matrix and string ids in "
         "RAM (what a run did before; its cosine normalisation copies the matrix once while loading). `cold`: the "
         "files' pages dropped from the page cache first (`posix_fadvise(DONTNEED)`); `warm`: the run right after, "
         "over the same rows (same seed)."), "",
        ("Columns: start = RSS after imports and the model, before any vector; loaded = after attaching the vectors; "
         "peak = `VmHWM`, the high-water RSS of the process's own address space; over start = peak - start; "
         "`ru_maxrss` beside it (equal unless the process inherited a higher mark from its parent at exec); "
         "anon / file = growth of `RssAnon` / `RssFile` from start to after the last batch (pages of a mapped file "
         "the process touched are in its RSS as `RssFile`; the kernel can drop them, and the page cache beyond them "
         "belongs to no process; the files are mapped with `MADV_RANDOM`, so a touched row maps its own page, not a "
         "read-ahead window). Batch times: the first batch, then the median and p95 of the others."), "",
        ("| path | passages | file GB | cache | load s | start MiB | loaded MiB | peak MiB | over start MiB | "
         "ru_maxrss MiB | anon / file growth MiB | first batch ms | median ms | p95 ms |"),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        *rows, "",
        "Files written (then deleted): " + "; ".join(written) + ".", "",
        *reading(runs, args.batches),
    ]
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
