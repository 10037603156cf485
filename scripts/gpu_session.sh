#!/usr/bin/env bash
# What awq_autoselect measures on the lent GPU, in one call of the device tool (docs/gpu-runs.md):
#   run(command="bash scripts/gpu_session.sh STEPS", carry=[".whl"])   (.whl: scripts/gpu-wheelhouse.sh)
# STEPS, a comma list, run in the order given (BUDGET_S, default 570: the seconds the call may use):
#   versions   versions, nvidia-smi, `env --json`
#   tests      every GPU test file in its own pytest process (a poisoned CUDA context stays in its file)
#   tests-k    the GPU test files whose outcome depends on AutoAWQ's compiled kernels
#   tests-both every GPU test file twice at once, with AutoAWQ's kernels on PYTHONPATH and without (logs
#              kern-*.log and nokern-*.log; the tests assert no timings, so sharing the GPU changes no outcome)
#   lanes      the files of $LANES ("a.py b.py|c.py": lanes side by side) with ($LANE_LABEL=kern) or without
#              AutoAWQ's kernels on PYTHONPATH
#   lanes-both $KERN_LANES with the kernels and $NOKERN_LANES without, side by side
#   make7b     a synthetic llama-2-7b GEMM checkpoint (random weights, real format)
#   fast7b     bench: auto (torch_int4) compiled and through generate(), transformers' static cache + compile, fp16
#   prefill7b  bench: TTFT of a 512-token prompt, eager forward, torch_int4 against fp16
#   kernels7b  tune (batch 1 and 8) + select per decode mode and batch + bench gemv_fast, gemv, gemm, torch_int4,
#              auto and fp16, eager and graph, batch 1 and 8
#   auto7b     bench auto (its trials, no fallback), torch_int4, gemv and fp16, eager and graph, batch 1 and 8
#   profprefill  scripts/profile_prefill.py: a 512-token prefill's wall and GPU time, torch_int4 and fp16
#   layers     scripts/bench_int4_layers.py: per-layer int4 matmuls at the 7B shapes (the gemv sweep, tinygemm,
#              fp16 cuBLAS), one row
#   triton7b   bench through generate(): gemv_triton, torch_int4 and fp16, batch 1, prompt 128, 128 new tokens
#   tests-gemv the GPU tests of the gemv kernels and gemv_triton
#   firstreply scripts/first_reply.py in fresh processes: cold (empty trial and compile caches), then warm (the same
#              caches kept); then `tune --json` reads the quiet ranking the cold load measured
#   tunebusy   tune from an empty trial cache twice while another process keeps the GPU busy with a matmul loop
# Steps whose results depend on AutoAWQ's kernels name their files kern-* or nokern-* (AWQ_KERNELS_DIR set or not).
# With AutoAWQ's kernels built for this machine, put their folder on PYTHONPATH with AWQ_KERNELS_DIR=/path.
# Results: $OUT/results.tgz and $OUT/summary.txt (the device tool returns at most 8 files).
set -uo pipefail
STEPS="${1:-versions,tests,make7b,fast7b}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-/tmp/awq-out}"
RES=/tmp/res
CKPT=/tmp/llama7b-gemm
mkdir -p "$RES" "$OUT"
finish() {  # under a lock: steps running side by side log at once
    ( flock 9; tar -czf "$OUT/results.tgz" -C "$RES" . 2>/dev/null; cp "$RES/summary.txt" "$OUT/summary.txt" 2>/dev/null
    ) 9>/tmp/awq-out.lock
}
trap finish EXIT
log() { echo "== $(date +%T) $*" | tee -a "$RES/summary.txt"; finish; }  # results kept even if the call is cut
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-570} ))
left() { echo $(( DEADLINE - $(date +%s) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
BASE_PATH="/tmp/site:$PWD"
export PYTHONPATH="$BASE_PATH${AWQ_KERNELS_DIR:+:$AWQ_KERNELS_DIR}"
export AWQ_AUTOSELECT_CACHE_DIR="$RES/trial-cache"
FILE_LIMIT="${FILE_LIMIT:-300}"
GPU_FILES=(tests/gpu/test_trials.py tests/gpu/test_fast_decode.py tests/gpu/test_loading.py tests/gpu/test_moe.py
    tests/gpu/test_torch_int4.py tests/gpu/test_hardware.py tests/gpu/test_bench.py tests/test_environment.py
    tests/test_formats.py tests/test_int4_dequant.py tests/test_selection.py tests/test_synthetic.py)
gpu_tests() {  # $1: label, rest: files
    local label=$1; shift
    for file in "$@"; do
        local name limit; name=$(basename "$file" .py); limit=$(( $(left) - 15 ))
        (( limit > FILE_LIMIT )) && limit=$FILE_LIMIT
        (( limit < 30 )) && { log "$label $name skipped: $(left) s left"; continue; }
        timeout "$limit" python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -rfE \
            --basetemp "/tmp/pytest-$label-$name" "$file" \
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
    gpu_tests tests "${GPU_FILES[@]}"
}
step_tests_both() {  # one lane each way; KERN_FILES / NOKERN_FILES (space-separated) run a subset
    KERN_LANES="${KERN_FILES:-${GPU_FILES[*]}}" NOKERN_LANES="${NOKERN_FILES:-${GPU_FILES[*]}}" step_lanes_both
}
step_lanes() {  # LANES: test files in lanes run side by side, "a.py b.py|c.py"; LANE_LABEL: kern or nokern
    local label="${LANE_LABEL:-nokern}" path="$BASE_PATH" lane
    if [[ "$label" == kern ]]; then
        [[ -n "${AWQ_KERNELS_DIR:-}" ]] || { log "lanes kern needs AWQ_KERNELS_DIR"; return 1; }
        path="$BASE_PATH:$AWQ_KERNELS_DIR"
    fi
    IFS='|' read -r -a lanes <<< "${LANES:-${GPU_FILES[*]}}"
    for lane in "${lanes[@]}"; do
        # shellcheck disable=SC2086
        PYTHONPATH="$path" gpu_tests "$label" $lane &
    done
    wait
}
step_lanes_both() {  # KERN_LANES with AutoAWQ's kernels and NOKERN_LANES without, all side by side
    LANE_LABEL=kern LANES="$KERN_LANES" step_lanes &
    LANE_LABEL=nokern LANES="$NOKERN_LANES" step_lanes &
    wait
}
step_tests_k() {
    gpu_tests tests-k tests/gpu/test_trials.py tests/gpu/test_fast_decode.py tests/gpu/test_moe.py tests/gpu/test_loading.py
}
step_make7b() {
    [[ -f "$CKPT/config.json" ]] && { log "make7b: $CKPT is there"; return; }
    log make7b
    timeout 120 python3 -m awq_autoselect make-synthetic "$CKPT" --shape llama-2-7b --version gemm --device cuda --overwrite \
        > "$RES/make7b.txt" 2>&1
    log "make7b exit $?"
}
step_fast7b() {
    bench bench-7b-fast 330 --versions auto --fp16 --decode compile,generate,hf-static \
        --prompt-tokens 128 --new-tokens 128 --repeats 3 --warmup 1
}
step_prefill7b() {
    bench bench-7b-prefill512 120 --versions torch_int4 --fp16 --decode eager --prompt-tokens 512 --new-tokens 4 \
        --repeats 5 --warmup 1 --no-kernel-time
}
step_kernels7b() {
    log tune
    timeout 200 python3 -m awq_autoselect tune "$CKPT" --decode graph --batch-size 1,8 --json > "$RES/tune.json" \
        2> "$RES/tune.err"
    log "tune exit $?"  # cached now: the choices below read what it measured
    python3 - "$RES/tune.json" <<'PY' 2>&1 | tee -a "$RES/summary.txt"
import json, sys
data = json.load(open(sys.argv[1]))
for r in data["results"]:
    per_rows = {}
    for shape in r.get("shapes", []):
        for t in shape["timings"]:
            e, g = per_rows.get(t["rows"], (0.0, 0.0))
            per_rows[t["rows"]] = (e + t["eager_us"], g + (t.get("graph_us") or 0.0))
    cells = " ".join(f"r{k}:{e:.0f}/{g:.0f}us" for k, (e, g) in sorted(per_rows.items()))
    print(f"{r['kernel']:<12} {r['status']:<7} {cells} {(r.get('reason') or '')[:160]}")
PY
    for decode in eager graph; do
        for batch in 1 8; do
            python3 -m awq_autoselect select --checkpoint "$CKPT" --decode $decode --batch-size $batch --json \
                > "$RES/select-$decode-b$batch.json" 2>/dev/null
            python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], "->", d["kernel"])' \
                "$RES/select-$decode-b$batch.json" "$decode b$batch" 2>&1 | tee -a "$RES/summary.txt"
        done
    done
    bench bench-7b-kernels 330 --versions gemv_fast,gemv,gemm,torch_int4,auto --fp16 --decode eager,graph \
        --batch-size 1,8 --prompt-tokens 128 --new-tokens 32 --repeats 2 --warmup 1
}
step_auto7b() {  # with AutoAWQ's kernels: what auto (no fallback) loads against the versions it chose between
    bench bench-7b-auto 420 --versions auto,torch_int4,gemv --fp16 --decode eager,graph --batch-size 1,8 \
        --prompt-tokens 128 --new-tokens 32 --repeats 2 --warmup 1
}
step_profprefill() {
    log profprefill
    timeout 150 python3 scripts/profile_prefill.py "$CKPT" --prompt-tokens 512 --out "$RES/prefill-profile.json" \
        > "$RES/prefill-profile.txt" 2>&1
    log "profprefill exit $?"; grep -v Warning "$RES/prefill-profile.txt" | tail -16 | tee -a "$RES/summary.txt"
}
step_layers() {
    log layers
    timeout "$(( $(left) < ${LAYERS_S:-225} + 15 ? $(left) - 15 : ${LAYERS_S:-225} ))" python3 scripts/bench_int4_layers.py --out "$RES/layers-7b.json" \
        --rows 1 --quick --no-gemlite --shapes 7b.qkv,7b.o,7b.gate_up,7b.down > "$RES/layers-7b.txt" 2>&1
    log "layers exit $?"; grep -v -i warn "$RES/layers-7b.txt" | tee -a "$RES/summary.txt"
}
step_triton7b() {
    # shellcheck disable=SC2086
    bench bench-7b-gemv-triton 330 --versions "${TRITON7B_VERSIONS:-gemv_triton,torch_int4}" ${TRITON7B_FP16---fp16} \
        --decode generate --prompt-tokens 128 --new-tokens "${TRITON7B_TOKENS:-128}" --repeats "${TRITON7B_REPEATS:-3}" \
        --warmup 1
}
step_tests_gemv() {
    gpu_tests tests-gemv tests/test_int4_gemv.py tests/test_triton_int4.py
}
LABEL=$([[ -n "${AWQ_KERNELS_DIR:-}" ]] && echo kern || echo nokern)
summarize_tune() {  # $1: tune --json output; the ranking with margins and spread, and each result's notes
    python3 - "$1" <<'PY' 2>&1 | tee -a "$RES/summary.txt"
import json, sys
data = json.load(open(sys.argv[1]))
sel = data["selection"]
print("selected:", sel["kernel"], "| chain:", " > ".join(sel["chain"]), "|", "; ".join(sel["notes"][1:]))
for c in sel["candidates"]:
    if c["measured_ms"] is not None:
        print(f"  {c['kernel']:<12} {c['measured_ms']:9.2f} ms/request  spread {c['spread_ms']:7.2f}  "
              f"margin {c['margin_ms']:8.2f}  noise {c['noise_ms']:7.2f}  tie {c['tie']}")
for r in data["results"]:
    host = r.get("host") or {}
    print(f"  {r['kernel']:<12} {r['status']:<12} {r['seconds']:6.1f} s  others_cpus={host.get('others_cpus')} "
          f"{(r.get('reason') or '')[:200]}")
PY
}
step_firstreply() {
    local caches="/tmp/first-reply-$LABEL" run
    rm -rf "$caches"; mkdir -p "$caches"
    for run in cold warm; do
        (( $(left) < 150 )) && { log "firstreply $run skipped: $(left) s left"; continue; }
        log "firstreply $LABEL $run"
        AWQ_AUTOSELECT_CACHE_DIR="$caches/trials" TORCHINDUCTOR_CACHE_DIR="$caches/inductor" \
            TRITON_CACHE_DIR="$caches/triton" timeout 280 python3 scripts/first_reply.py "$CKPT" \
            --out "$RES/first-reply-$LABEL-$run.json" --label "$LABEL-$run" --launched-at "$(date +%s.%N)" \
            > "$RES/first-reply-$LABEL-$run.txt" 2>&1
        log "firstreply $run exit $?"; tail -1 "$RES/first-reply-$LABEL-$run.txt" | tee -a "$RES/summary.txt"
    done
    AWQ_AUTOSELECT_CACHE_DIR="$caches/trials" timeout 120 python3 -m awq_autoselect tune "$CKPT" --json \
        > "$RES/tune-$LABEL-quiet.json" 2> "$RES/tune-$LABEL-quiet.err"
    log "tune $LABEL quiet (the cold load's trials, from the cache) exit $?"; summarize_tune "$RES/tune-$LABEL-quiet.json"
}
step_tunebusy() {
    local run busy
    for run in busy1 busy2; do
        (( $(left) < 120 )) && { log "tunebusy $run skipped: $(left) s left"; continue; }
        python3 -c 'import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.half)
while True:
    for _ in range(20): a @ a
    torch.cuda.synchronize()' > "$RES/busy-$LABEL-$run.log" 2>&1 &
        busy=$!
        sleep 8  # the loop is running before the trials start
        log "tune $LABEL $run (a matmul loop keeps the GPU busy)"
        AWQ_AUTOSELECT_CACHE_DIR="/tmp/tune-$LABEL-$run" timeout 240 python3 -m awq_autoselect tune "$CKPT" --json \
            > "$RES/tune-$LABEL-$run.json" 2> "$RES/tune-$LABEL-$run.err"
        log "tune $LABEL $run exit $?"
        kill "$busy"; wait "$busy" 2>/dev/null
        summarize_tune "$RES/tune-$LABEL-$run.json"
    done
}
for step in ${STEPS//,/ }; do
    "step_${step//-/_}" || log "step $step failed"
done
log done
