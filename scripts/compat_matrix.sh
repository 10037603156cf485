#!/usr/bin/env bash
# Which transformers versions work with AutoAWQ 0.2.9? Establish it by running it.
#
# For each version: a fresh scratch venv, `pip install torch==$TORCH_VERSION`, then
# `pip install autoawq==0.2.9 transformers==X` (pip picks the rest), then scripts/compat_check.py
# (import awq; build a tiny Llama; quantize GEMM g128; save; from_quantized on CPU; forward; generate 4 tokens).
# The venv is deleted afterwards; pip's cache is reused between versions.
#
# Usage: scripts/compat_matrix.sh [-o OUT_DIR] [VERSION ...]
#   OUT_DIR   where each version's JSON row, pip log and run log go (default: $SCRATCH/awq-compat-results)
#   VERSION   transformers versions to test (default: the list below)
# Environment: PYTHON (interpreter for the venvs, default python3), TORCH_VERSION (default 2.13.0),
#   AUTOAWQ_VERSION (default 0.2.9), SCRATCH (parent dir for venvs, default /tmp).
# Exit status: 0 when the matrix ran (whatever passed); 2 on usage errors.
set -uo pipefail

DEFAULT_VERSIONS=(4.51.3 4.56.2 4.57.6 5.0.0 5.17.0 5.24.0)
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
AUTOAWQ_VERSION=${AUTOAWQ_VERSION:-0.2.9}
SCRATCH=${SCRATCH:-/tmp}
OUT_DIR=$SCRATCH/awq-compat-results

if [[ ${1:-} == "-o" ]]; then
    [[ $# -ge 2 ]] || { echo "usage: $0 [-o OUT_DIR] [VERSION ...]" >&2; exit 2; }
    OUT_DIR=$2
    shift 2
fi
VERSIONS=("$@")
[[ ${#VERSIONS[@]} -gt 0 ]] || VERSIONS=("${DEFAULT_VERSIONS[@]}")

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY="$OUT_DIR/summary.tsv"
printf 'transformers\tresult\tfailed_steps\terror\n' >"$SUMMARY"

for version in "${VERSIONS[@]}"; do
    venv=$(mktemp -d "$SCRATCH/awq-compat-venv-$version-XXXXXX")
    echo "== transformers $version (venv $venv)"
    row="$OUT_DIR/transformers-$version.json"
    rm -f "$row"
    if ! {
        "$PYTHON" -m venv "$venv" &&
            "$venv/bin/pip" install --quiet "torch==$TORCH_VERSION" &&
            "$venv/bin/pip" install --quiet "autoawq==$AUTOAWQ_VERSION" "transformers==$version"
    } >"$OUT_DIR/pip-$version.log" 2>&1; then
        echo "   install failed, see $OUT_DIR/pip-$version.log"
        printf '%s\tinstall failed\tpip install\t%s\n' "$version" \
            "$(grep -m1 -E '^ERROR' "$OUT_DIR/pip-$version.log" | tr '\t' ' ')" >>"$SUMMARY"
        rm -rf "$venv"
        continue
    fi
    "$venv/bin/pip" freeze >"$OUT_DIR/freeze-$version.txt" 2>/dev/null
    (cd "$REPO_ROOT" && timeout 900 "$venv/bin/python" scripts/compat_check.py --out "$row") \
        >"$OUT_DIR/run-$version.log" 2>&1
    if [[ -s $row ]]; then
        "$venv/bin/python" - "$row" "$version" >>"$SUMMARY" <<'EOF'
import json, sys
row = json.load(open(sys.argv[1], encoding="utf-8"))
error = (row["error"] or "").replace("\t", " ")
print(f"{sys.argv[2]}\t{row['result']}\t{'; '.join(row['failed_steps'])}\t{error}")
EOF
    else
        printf '%s\tcrashed\t\tsee run-%s.log\n' "$version" "$version" >>"$SUMMARY"
    fi
    tail -n 1 "$OUT_DIR/run-$version.log"
    rm -rf "$venv"
done

echo "== summary ($SUMMARY)"
cat "$SUMMARY"
