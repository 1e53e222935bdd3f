#!/usr/bin/env bash
# The GPU checks of issue 16, in one run of at most 8 minutes, writing benchmarks/results/gpu.md.
#
#   scripts/gpu_check.sh [--wheels DIR] [--out FILE] [--work DIR] [--steps abcde] [--dry-run]
#
#   --wheels DIR  carried wheels (SHA256SUMS, NAME.whl, NAME.whl.part-aa..): parts are joined, every checksum is
#                 verified, and the wheels are installed offline into WORK/site (PYTHONPATH); default $WHEELS, else
#                 none (the packages must already import)
#   --dry-run     every step on CPU with tiny settings (tiny BERT, tiny BEIR data, a few steps), for tests
#   --steps       which of the sections to run (default abcde):
#     a  SciFact seeds sweep through Ray Tune, 0.25 GPU per trial (four trials share the GPU), to FINISHED + MLflow
#     b  tasb-ray encode-corpus on Ray Data with a GPU actor
#     c  benchmarks/train_overhead.py: full train step vs bare forward/backward/step (goal: overhead <= 10%)
#     d  benchmarks/encode.py: encode_corpus throughput vs SentenceTransformer.encode (goal: ratio >= 0.9)
#     e  GPU utilisation and peak memory of each step (nvidia-smi sampled every 0.5 s)
# Each step runs under `timeout`; a step that fails or times out is reported as such and the others still run.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
WHEELS=${WHEELS:-}
OUT=$REPO/benchmarks/results/gpu.md
WORK=${WORK:-/tmp/tasb-gpu-check}
STEPS=abcde
DRY=0
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --wheels) WHEELS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
# shellcheck source=scripts/wheels_lib.sh
source "$REPO/scripts/wheels_lib.sh"
mkdir -p "$WORK" "$(dirname "$OUT")"
WORK=$(cd "$WORK" && pwd)
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$WHEELS" ]; then
    echo "== wheels from $WHEELS"
    assemble_wheels "$WHEELS" || exit 1
    install_wheels "$WHEELS" "$WORK/site" "$PY" || { echo "gpu_check.sh: offline install failed" >&2; exit 1; }
    export PYTHONPATH="$PYTHONPATH:$WORK/site" PATH="$WORK/site/bin:$PATH"
fi
"$PY" -c "import ray, mlflow, faiss, bm25s, ir_measures, pytrec_eval, sentence_transformers" \
    || { echo "gpu_check.sh: packages missing (pass --wheels DIR)" >&2; exit 1; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
export TASB_RAY_DATA=${TASB_RAY_DATA:-$REPO/shared/data:$REPO/../shared/data} PYTHONUNBUFFERED=1
export TASB_RAY_CACHE=$WORK/cache

if [ $DRY = 1 ]; then
    "$PY" "$REPO/benchmarks/gpu_check.py" fixture "$WORK/fixture" >/dev/null || exit 1
    MODEL=$WORK/fixture/tiny-bert DATASET=$WORK/fixture/data/tinybeir
    GPU_FLAG=--no-gpu RAY_GPUS="--num-gpus 1"   # one logical GPU: the trials' placement still runs
    T_A=420 T_B=120 T_C=120 T_D=180   # a loaded 2-core box: the tiny sweep took 239 s at load 28
else
    MODEL=minilm-l6 DATASET=scifact GPU_FLAG=--gpu RAY_GPUS=""
    T_A=270 T_B=60 T_C=60 T_D=60
fi

SMI_PID=
if [ $DRY = 0 ] && command -v nvidia-smi >/dev/null && [[ $STEPS == *e* ]]; then
    # epoch seconds, utilisation %, memory MiB: matched to each step's time window in section (e)
    (while :; do
        s=$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits 2>/dev/null | head -1)
        echo "$(date +%s.%N),${s// /}"; sleep 0.5
    done) > "$WORK/smi.csv" &
    SMI_PID=$!
fi
: > "$WORK/steps.tsv"

{
    echo "# GPU check (issue 16)"
    echo
    echo "Command: \`scripts/gpu_check.sh $([ $DRY = 1 ] && echo --dry-run) --steps $STEPS\` on $(date -u +%Y-%m-%dT%H:%MZ)  "
    echo "Machine: $(nproc) cores, $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device")'), \
torch $("$PY" -c 'import torch; print(torch.__version__)'), ray $("$PY" -c 'import ray; print(ray.__version__)')"
    [ $DRY = 1 ] && echo && echo "**Dry run on CPU with tiny settings: the numbers say nothing about a GPU.**"
    echo
} > "$OUT"

# step NAME TITLE LIMIT CMD...: run CMD under timeout, log to WORK/NAME.log, append a section with the command.
step() {
    local name=$1 title=$2 limit=$3; shift 3
    local start end rc
    echo "== ($name) $title"
    start=$(date +%s.%N)
    (cd "$REPO" && timeout "$limit" "$@") > "$WORK/$name.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    printf '%s\t%s\t%s\t%s\n' "$name" "$start" "$end" "$rc" >> "$WORK/steps.tsv"
    {
        echo "## ($name) $title"
        echo
        echo "Command: \`${*#"$REPO/"}\`  "
        printf 'Exit status %s in %.0f s (limit %s s)%s\n\n' "$rc" "$(awk "BEGIN { print $end - $start }")" "$limit" \
            "$([ $rc = 124 ] && echo ': TIMED OUT')"
    } >> "$OUT"
    [ $rc = 0 ] || { echo '```'; tail -n 25 "$WORK/$name.log"; echo '```'; echo; } >> "$OUT"
    return $rc
}

if [[ $STEPS == *a* ]]; then
    rm -rf "$WORK/sweep"; mkdir -p "$WORK/sweep"
    if [ $DRY = 1 ]; then
        "$PY" "$REPO/benchmarks/gpu_check.py" sweep-config "$WORK/sweep/sweep.yaml" --dry-run "$WORK/fixture" \
            --gpus-per-trial 0.5 >/dev/null
        EXP=gpu-check-dry
    else
        "$PY" "$REPO/benchmarks/gpu_check.py" sweep-config "$WORK/sweep/sweep.yaml" --gpus-per-trial 0.25 >/dev/null
        EXP=gpu-check-seeds
    fi
    # shellcheck disable=SC2086
    if step a "Ray Tune seeds sweep, fractional GPU per trial" $T_A "$PY" experiments/seeds.py \
        --config "$WORK/sweep/sweep.yaml" --run-dir "$WORK/sweep/run" --fresh $RAY_GPUS; then
        { grep -E "^(trial resources|max concurrent trials)" "$WORK/a.log"; echo
          "$PY" "$REPO/benchmarks/gpu_check.py" sweep-summary "$WORK/sweep/run" "$EXP"; echo; } >> "$OUT" 2>&1
    fi
fi

if [[ $STEPS == *b* ]]; then
    rm -rf "$WORK/emb"
    # Ray's socket paths (<temp>/session_<date>_<pid>/sockets/plasma_store) must fit in 107 bytes: a short temp dir,
    # not one under a possibly deep $WORK.
    RAY_B=$(mktemp -d /tmp/tr-b-XXXX)
    # shellcheck disable=SC2086
    step b "encode-corpus on Ray Data with a GPU actor" $T_B "$PY" -m tasb_ray.cli encode-corpus \
        --dataset "$DATASET" --model "$MODEL" --out "$WORK/emb" --no-progress $GPU_FLAG \
        --ray-temp-dir "$RAY_B" \
        && { echo '```'; grep -E "^(embeddings|actors):" "$WORK/b.log"; echo '```'; echo; } >> "$OUT"
    rm -rf "$RAY_B"
fi

if [[ $STEPS == *c* ]]; then
    if [ $DRY = 1 ]; then C_ARGS=(--model "$MODEL" --steps 2 --batch-size 4); else C_ARGS=(--model minilm-l6 --steps 8 --batch-size 32); fi
    step c "train step overhead (full train_step vs bare forward/backward/step)" $T_C "$PY" \
        benchmarks/train_overhead.py "${C_ARGS[@]}" --out "$WORK/overhead.md" \
        && { tail -n +2 "$WORK/overhead.md"; echo; } >> "$OUT"
fi

if [[ $STEPS == *d* ]]; then
    if [ $DRY = 1 ]; then D_ARGS=(--dataset "$DATASET" --model "$MODEL" --max-len 32); else D_ARGS=(--dataset scifact --model minilm-l6 --max-len 256); fi
    step d "encode throughput: encode_corpus vs SentenceTransformer.encode" $T_D "$PY" benchmarks/encode.py \
        "${D_ARGS[@]}" --skip-memory --out "$WORK/encode.md" \
        && { sed -n '/^## Throughput/,$p' "$WORK/encode.md" | tail -n +2; echo; } >> "$OUT"
fi

if [[ $STEPS == *e* ]]; then
    [ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
    {
        echo "## (e) GPU utilisation and peak memory per step"
        echo
        if [ -s "$WORK/smi.csv" ]; then
            "$PY" "$REPO/benchmarks/gpu_check.py" smi-summary "$WORK/smi.csv" "$WORK/steps.tsv"
            echo
            echo "nvidia-smi sampled every 0.5 s; memory.used is the whole GPU's (all processes)."
        else
            echo "No nvidia-smi samples (no GPU here)."
        fi
        echo
    } >> "$OUT"
fi
[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
echo "== wrote $OUT"
awk -F'\t' '$4 != 0 { bad = 1 } END { exit bad }' "$WORK/steps.tsv"
