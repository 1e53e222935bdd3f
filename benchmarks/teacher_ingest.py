"""Teacher-file ingestion side by side: a bare ``pyarrow.csv.read_csv`` vs tasb-ray's readers, per reader in a
fresh process (so each peak RSS is its own).

    python benchmarks/teacher_ingest.py [--lines 4000000] [--repeats 3] [--skip-line-reader]

The file is the authors' layout (``pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid``) written by
``benchmarks/msmarco_synth.py`` (the teacher file of the scale that gives ``--lines`` lines; ~40 bytes a line).
Readers:

* ``pyarrow.csv.read_csv``: the bare read, types inferred (double, double, int64 x3), all threads;
* ``read_teacher_table``: tasb-ray's Arrow table of the pairs schema (string ids, float64 scores, validated);
* ``read_teacher_tsv``: the same as a pandas DataFrame (what ``FileTeacher`` reads);
* ``line reader (before #13)``: the line-by-line reader this replaced, for reference (one repeat).

Time is the read alone (imports and start-up excluded), the median of ``--repeats`` runs; peak RSS is the
process's ``ru_maxrss``, the largest of the runs, and "over start" is the peak minus the RSS after imports.
Goal (issue 13): tasb-ray within 3x the time and 3x the peak RSS of the bare read. Writes
``benchmarks/results/teacher_ingest.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from machine import command_line, describe_machine, load_line

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HERE = Path(__file__).resolve().parent
READERS = ("pyarrow.csv.read_csv", "read_teacher_table", "read_teacher_tsv", "line reader (before #13)")
GOAL = 3.0


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _old_line_reader(path):
    """The reader before issue 13 (commit 50d7b36), verbatim but for the imports."""
    import pandas as pd

    from tasb_ray.data.lines import iter_lines, parse_float, split_columns
    from tasb_ray.errors import DataFormatError
    from tasb_ray.schema import PAIRS_COLUMNS

    fields = ("pos_score", "neg_score", "qid", "pos_pid", "neg_pid")
    rows = []
    for n, line in iter_lines(path):
        parts = [p.strip() for p in split_columns(path, n, line, 5)]
        for name, value in zip(fields[2:], parts[2:]):
            if not value:
                raise DataFormatError(path, "empty id", line=n, field=name)
        rows.append((parts[2], parts[3], parts[4],
                     parse_float(path, n, parts[0], "pos_score"), parse_float(path, n, parts[1], "neg_score")))
    return pd.DataFrame(rows, columns=list(PAIRS_COLUMNS))


def _child(reader: str, path: str) -> None:
    """Run one reader and print a JSON line: seconds, rows, peak and start RSS."""
    import pandas  # noqa: F401  (every reader pays for the same imports before the clock starts)
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from tasb_ray.data import teacher_file

    start_rss = _rss_mib()
    t0 = time.perf_counter()
    if reader == READERS[0]:
        out = pacsv.read_csv(path, read_options=pacsv.ReadOptions(autogenerate_column_names=True),
                             parse_options=pacsv.ParseOptions(delimiter="\t"))
        types = [str(t) for t in out.schema.types]
    elif reader == READERS[1]:
        out = teacher_file.read_teacher_table(path)
        types = [str(t) for t in out.schema.types]
    elif reader == READERS[2]:
        out = teacher_file.read_teacher_tsv(path)
        types = [str(t) for t in out.dtypes]
    else:
        out = _old_line_reader(path)
        types = [str(t) for t in out.dtypes]
    seconds = time.perf_counter() - t0
    rows = out.num_rows if isinstance(out, pa.Table) else len(out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rows": rows, "peak_mib": peak, "start_mib": start_rss, "types": types}))


def _run(reader: str, path: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", reader, "--file", str(path)], capture_output=True,
                          text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{reader} failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=4_000_000, help="teacher lines to generate (default 4,000,000)")
    ap.add_argument("--file", help="use this teacher file instead of generating one")
    ap.add_argument("--repeats", type=int, default=3, help="runs per reader (median time; default 3)")
    ap.add_argument("--skip-line-reader", action="store_true", help="skip the slow pre-#13 reader")
    ap.add_argument("--out", default=str(HERE / "results" / "teacher_ingest.md"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child, args.file)
        return 0

    import pyarrow

    from tasb_ray.fileio import atomic_path

    write_teacher_file = _load_synth().write_teacher_file

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="teacher-ingest-") as tmp:
        path = Path(args.file) if args.file else Path(tmp) / "teacher.train.tsv"
        if not args.file:
            t0 = time.perf_counter()
            n = write_teacher_file(path, args.lines, seed=0)
            print(f"generated {n:,} lines, {path.stat().st_size / 2**20:.0f} MiB in "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        size = path.stat().st_size
        results = {}
        for reader in READERS:
            if reader == READERS[3] and args.skip_line_reader:
                continue
            runs = [_run(reader, path) for _ in range(1 if reader == READERS[3] else args.repeats)]
            results[reader] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "all_seconds": [r["seconds"] for r in runs],
                "peak_mib": max(r["peak_mib"] for r in runs),
                "start_mib": min(r["start_mib"] for r in runs),
                "rows": runs[0]["rows"], "types": runs[0]["types"],
            }
            r = results[reader]
            print(f"{reader}: {r['seconds']:.2f} s (runs {', '.join(f'{s:.2f}' for s in r['all_seconds'])}), "
                  f"peak {r['peak_mib']:.0f} MiB, {r['rows']:,} rows", file=sys.stderr)
    load_after = os.getloadavg()

    bare = results[READERS[0]]
    rows = []
    for reader, r in results.items():
        t_ratio, m_ratio = r["seconds"] / bare["seconds"], r["peak_mib"] / bare["peak_mib"]
        rows.append(f"| {reader} | {r['seconds']:.2f} | {', '.join(f'{s:.2f}' for s in r['all_seconds'])} | "
                    f"{r['peak_mib']:.0f} | {r['peak_mib'] - r['start_mib']:.0f} | {t_ratio:.2f}x | {m_ratio:.2f}x | "
                    f"{', '.join(r['types'])} |")
    verdict = []
    for reader in READERS[1:3]:
        r = results[reader]
        t_ratio, m_ratio = r["seconds"] / bare["seconds"], r["peak_mib"] / bare["peak_mib"]
        ok = t_ratio <= GOAL and m_ratio <= GOAL
        verdict.append(f"- `{reader}`: {t_ratio:.2f}x the time, {m_ratio:.2f}x the peak RSS of the bare read: "
                       f"{'meets' if ok else 'MISSES'} the goal (<= {GOAL:.0f}x both).")
    cmd = command_line("benchmarks/teacher_ingest.py", argv)
    lines = [
        "# Teacher-file ingestion: bare pyarrow vs tasb-ray (issue 13)", "",
        f"Command: `{cmd}`  ",
        f"Machine: {describe_machine()}  ",
        f"Versions: pyarrow {pyarrow.__version__}, pandas {__import__('pandas').__version__}  ",
        f"{load_line(load_before, load_after)} (a shared machine: other work ran alongside)", "",
        f"File: {bare['rows']:,} lines in the authors' layout, {size / 2**20:.0f} MiB, from "
        "`benchmarks/msmarco_synth.py` (seed 0).", "",
        "Each reader runs in a fresh process; time is the read alone (median of the runs listed), peak RSS the "
        "process's largest `ru_maxrss` (interpreter and imports included), \"over start\" the peak minus the RSS "
        "after imports. Ratios are to the bare read.", "",
        "| reader | s | runs (s) | peak RSS MiB | over start MiB | time ratio | RSS ratio | column types |",
        "|---|---:|---|---:|---:|---:|---:|---|",
        *rows, "",
        *verdict, "",
    ]
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


# benchmarks/ is not a package: load the generator by path under a private name.
def _load_synth():
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_msmarco_synth", HERE / "msmarco_synth.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


if __name__ == "__main__":
    sys.exit(main())
