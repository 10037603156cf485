#!/usr/bin/env bash
# Everything awq_autoselect measures on the lent GPU, in one call of the device tool:
#   run(command="bash scripts/gpu_session.sh STEPS", carry=[".whl"])   (build .whl with scripts/gpu-wheelhouse.sh)
# STEPS is a comma list of: versions, detect, tests, retest, threshold, loads, bench7b, smoke7b
# (default: all but retest and bench7b).
# Results land in $OUT/results.tgz (the device tool returns at most 8 files) plus $OUT/summary.txt.
set -uo pipefail
STEPS="${1:-versions,detect,tests,threshold,loads,smoke7b}"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT="${OUT:-/tmp/awq-out}"
RES=/tmp/res
mkdir -p "$RES/loads" "$OUT"
finish() { tar -czf "$OUT/results.tgz" -C "$RES" . ; cp "$RES/summary.txt" "$OUT/summary.txt" 2>/dev/null; }
trap finish EXIT
log() { echo "== $(date +%T) $*" | tee -a "$RES/summary.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { log "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD"
has() { [[ ",$STEPS," == *",$1,"* ]]; }

if has versions; then
    log versions
    nvidia-smi > "$RES/nvidia-smi.txt" 2>&1
    python3 - <<'PY' 2>&1 | tee -a "$RES/summary.txt"
import platform, torch, transformers, triton, awq_autoselect
from awq_autoselect._awq import import_awq
awq = import_awq()
print("python", platform.python_version(), "| torch", torch.__version__, "cuda", torch.version.cuda,
      "| transformers", transformers.__version__, "| triton", triton.__version__, "| autoawq", awq.__version__,
      "| awq_autoselect", awq_autoselect.__version__)
print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
PY
    python3 -m awq_autoselect env --json > "$RES/env.json" 2>&1
    python3 -m awq_autoselect report --json > "$RES/report.json" 2>"$RES/report.err"
    python3 -m awq_autoselect report > "$RES/report.txt" 2>&1
fi
if has detect; then
    log detect-timing
    timeout 120 python3 scripts/detect_timing.py --runs 5 --json "$RES/detect-timing.json" 2>&1 | tail -20 | tee -a "$RES/summary.txt"
fi
if has tests; then
    log gpu-tests
    AWQ_AUTOSELECT_REPORT_DIR="$RES/loads" timeout 480 python3 -m pytest -m gpu -q -p no:cacheprovider \
        -o addopts="" --timeout=150 -rfE tests/ > "$RES/pytest-gpu.log" 2>&1
    log "gpu-tests exit $?"; tail -30 "$RES/pytest-gpu.log" | tee -a "$RES/summary.txt"
fi
if has retest; then
    log gpu-retest
    AWQ_AUTOSELECT_REPORT_DIR="$RES/loads" timeout 120 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
        --timeout=100 -rfE tests/test_benchmark_gpu.py tests/test_environment.py tests/test_loading_gpu.py \
        -k "cuda_graph or without_cuda_context or loads_and_generates" > "$RES/pytest-gpu-retest.log" 2>&1
    log "gpu-retest exit $?"; tail -5 "$RES/pytest-gpu-retest.log" | tee -a "$RES/summary.txt"
fi
if has threshold; then
    log int4-threshold
    timeout 200 python3 scripts/measure_int4_threshold.py --reps 30 --json "$RES/int4-threshold.json" \
        > "$RES/int4-threshold.txt" 2>&1
    log "threshold exit $?"; tail -15 "$RES/int4-threshold.txt" | tee -a "$RES/summary.txt"
fi
if has loads; then
    log loads
    for layout in gemm gemv; do
        timeout 60 python3 -m awq_autoselect make-synthetic "/tmp/tiny-$layout" --shape tiny --version "$layout" --overwrite >/dev/null 2>&1
        for version in auto gemv; do
            timeout 90 python3 -m awq_autoselect load "/tmp/tiny-$layout" --version "$version" --generate "hello" \
                --max-new-tokens 8 > "$RES/loads/cli-$layout-$version.txt" 2>&1
            echo "exit $?" >> "$RES/loads/cli-$layout-$version.txt"
        done
    done
    tail -n +1 "$RES"/loads/cli-*.txt | tail -60 | tee -a "$RES/summary.txt"
fi
if has smoke7b; then
    log smoke-7b
    /usr/bin/time -v python3 -m awq_autoselect make-synthetic /tmp/llama7b-gemm --shape llama-2-7b --version gemm --device cuda \
        --overwrite > "$RES/make-7b.txt" 2>&1
    log "make-synthetic exit $?"; grep -E "Elapsed|Maximum resident" "$RES/make-7b.txt" | tee -a "$RES/summary.txt"
    timeout 240 python3 -m awq_autoselect bench /tmp/llama7b-gemm --versions gemv,gemm,gemm_triton,torch_int4 --fp16 \
        --prompt-tokens 128 --new-tokens 16 --repeats 1 --warmup 1 --json "$RES/smoke7b.json" > "$RES/smoke7b.txt" 2>&1
    log "smoke bench exit $?"; tail -30 "$RES/smoke7b.txt" | tee -a "$RES/summary.txt"
fi
if has bench7b; then
    log bench-7b
    if [ -f "$RES/int4-threshold.json" ]; then
        # Benchmark torch_int4 with the crossover just measured on this card (docs/torch-int4.md).
        AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['crossover']['recommended'] or '')" "$RES/int4-threshold.json")
        export AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD
        log "torch_int4 dense threshold for the benchmark: ${AWQ_AUTOSELECT_INT4_DENSE_THRESHOLD:-default}"
    fi
    [ -d /tmp/llama7b-gemm ] || python3 -m awq_autoselect make-synthetic /tmp/llama7b-gemm --shape llama-2-7b \
        --version gemm --device cuda --overwrite > "$RES/make-7b.txt" 2>&1
    # prompt 128 eager and with a CUDA graph; prompt 512 with a CUDA graph (prefill runs eagerly in both modes).
    for config in ${BENCH_CONFIGS:-128:--cuda-graph:150 512:--cuda-graph:150 128::220}; do
        prompt="${config%%:*}"; rest="${config#*:}"; graph="${rest%%:*}"; limit="${rest#*:}"
        tag="p${prompt}${graph:+-graph}"
        timeout "$limit" python3 -m awq_autoselect bench /tmp/llama7b-gemm \
            --versions gemv,gemm,gemm_triton,torch_int4 --fp16 --prompt-tokens "$prompt" --new-tokens 128 \
            --repeats "${BENCH_REPEATS:-2}" --warmup 1 $graph --json "$RES/bench7b-$tag.json" \
            --markdown "$RES/bench7b-$tag.md" > "$RES/bench7b-$tag.txt" 2>&1
        log "bench $tag exit $?"; grep -E "^\| (gemm_triton|torch_int4|fp16) " "$RES/bench7b-$tag.txt" | tee -a "$RES/summary.txt"
        finish  # keep what is done in $OUT even if a later step runs out of time
    done
fi
log done
