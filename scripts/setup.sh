#!/usr/bin/env bash
# Create .venv and install awq_autoselect with its test tools.
#
# torch is installed first and pinned by the caller's environment: on the CI machine `torch==2.13.0` is a CPU
# wheel on local disk; elsewhere set TORCH_SPEC (e.g. TORCH_SPEC="torch==2.6.0") or leave the default.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH_SPEC"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip check || true   # autoawq lists triton for every platform; informational only
.venv/bin/python -c "import awq_autoselect, torch, transformers, awq; print('awq_autoselect', awq_autoselect.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| autoawq', awq.__version__)" 2>/dev/null
