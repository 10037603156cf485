#!/usr/bin/env bash
# What awq_autoselect measures on the lent GPU, in one call of the device tool (docs/gpu-runs.md):
#   run(command="bash scripts/gpu_session.sh STEPS", carry=[".whl"])   (.whl: scripts/gpu-wheelhouse.sh)
# STEPS, a comma list, run in the order given (BUDGET_S, default 570: the seconds the call may use):
#   versions   versions, nvidia-smi, `env --json`
#   tests      every GPU test file in its own pytest process (a poisoned CUDA context stays in its file)
#   tests-k    the GPU test files whose outcome depends on AutoAWQ's compiled kernels
#   make7b     a synthetic llama-2-7b GEMM checkpoint (random weights, real format)
#   fast7b     bench: auto (torch_int4) in every decode mode, transformers' static cache + compile, fp16
#   prefill7b  bench: TTFT of a 512-token prompt, eager forward, torch_int4 against fp16
#   kernels7b  tune + load auto + bench gemv, gemm, torch_int4, auto and fp16, eager and graph, batch 1 and 8
# With AutoAWQ's kernels built for this machine, put their folder on PYTHONPATH with AWQ_KERNELS_DIR=/path.
# Results: $OUT/results.tgz and $OUT/summary.txt (the device tool returns at most 8 files).
set -uo pipefail
STEPS="${1:-versions,tests,make7b,fast7b}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-/tmp/awq-out}"
RES=/tmp/res
CKPT=/tmp/llama7b-gemm
mkdir -p "$RES" "$OUT"
finish() { tar -czf "$OUT/results.tgz" -C "$RES" . ; cp "$RES/summary.txt" "$OUT/summary.txt" 2>/dev/null; }
trap finish EXIT
log() { echo "== $(date +%T) $*" | tee -a "$RES/summary.txt"; finish; }  # results kept even if the call is cut
DEADLINE=$((SECONDS + ${BUDGET_S:-570}))
left() { echo $((DEADLINE - SECONDS)); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD${AWQ_KERNELS_DIR:+:$AWQ_KERNELS_DIR}"
export AWQ_AUTOSELECT_CACHE_DIR="$RES/trial-cache"
gpu_tests() {  # $1: label, rest: files
    local label=$1; shift
    for file in "$@"; do
        local name limit; name=$(basename "$file" .py); limit=$(( $(left) - 15 ))
        (( limit > 240 )) && limit=240
        (( limit < 30 )) && { log "$label $name skipped: $(left) s left"; continue; }
        timeout "$limit" python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rfE "$file" \
            > "$RES/$label-$name.log" 2>&1
        log "$label $name exit $? :: $(tail -1 "$RES/$label-$name.log")"
    done
}

bench() {  # $1: name, $2: timeout, rest: bench arguments
    local name=$1 limit=$2; shift 2
    (( limit > $(left) - 15 )) && limit=$(( $(left) - 15 ))
    (( limit < 60 )) && { log "$name skipped: $(left) s left"; return; }
    timeout "$limit" python3 -m awq_autoselect bench "$CKPT" "$@" --json "$RES/$name.json" --markdown "$RES/$name.md" \
        > "$RES/$name.txt" 2>&1
    log "$name exit $?"; tail -25 "$RES/$name.txt" | tee -a "$RES/summary.txt"
}

step_versions() {
    log versions
    nvidia-smi > "$RES/nvidia-smi.txt" 2>&1
    python3 - <<'PY' 2>&1 | tee -a "$RES/summary.txt"
import platform, torch, transformers, triton, awq_autoselect
from awq_autoselect._awq import import_awq
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| triton", triton.__version__, "| autoawq",
      import_awq().__version__, "| awq_autoselect", awq_autoselect.__version__)
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
PY
    python3 -m awq_autoselect env --json > "$RES/env.json" 2>&1
    python3 -m awq_autoselect env 2>&1 | tee -a "$RES/summary.txt"
}
step_tests() {
    gpu_tests tests tests/gpu/test_*.py tests/test_environment.py tests/test_formats.py tests/test_int4_dequant.py \
        tests/test_selection.py tests/test_synthetic.py
}
step_tests_k() {
    gpu_tests tests-k tests/gpu/test_trials.py tests/gpu/test_fast_decode.py tests/gpu/test_moe.py tests/gpu/test_loading.py
}
step_make7b() {
    log make7b
    timeout 120 python3 -m awq_autoselect make-synthetic "$CKPT" --shape llama-2-7b --version gemm --device cuda --overwrite \
        > "$RES/make7b.txt" 2>&1
    log "make7b exit $?"
}
step_fast7b() {
    bench bench-7b-fast 330 --versions auto --fp16 --decode compiled,generate,hf-static,graph \
        --prompt-tokens 128 --new-tokens 128 --repeats 3 --warmup 1
}
step_prefill7b() {
    bench bench-7b-prefill512 120 --versions torch_int4 --fp16 --decode eager --prompt-tokens 512 --new-tokens 4 \
        --repeats 5 --warmup 1 --no-kernel-time
}
step_kernels7b() {
    log tune
    timeout 150 python3 -m awq_autoselect tune "$CKPT" --decode graph --json > "$RES/tune-graph.json" 2> "$RES/tune-graph.err"
    log "tune exit $?"  # cached now: printing the table again costs nothing
    python3 -m awq_autoselect tune "$CKPT" --decode graph 2>&1 | tail -15 | tee -a "$RES/summary.txt"
    timeout 120 python3 -m awq_autoselect load "$CKPT" --json > "$RES/load-auto.json" 2> "$RES/load-auto.err"
    log "load auto exit $?"; tail -3 "$RES/load-auto.err" | tee -a "$RES/summary.txt"
    bench bench-7b-kernels 330 --versions gemv,gemm,torch_int4,auto --fp16 --decode eager,graph --batch-size 1,8 \
        --prompt-tokens 128 --new-tokens 64 --repeats 2 --warmup 1
}
for step in ${STEPS//,/ }; do
    "step_${step//-/_}" || log "step $step failed"
done
log done
