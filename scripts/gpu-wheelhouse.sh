#!/usr/bin/env bash
# Build .whl/: the Python packages the lent GPU machine (Python 3.12, torch 2.11+cu130, no package registry)
# lacks for awq_autoselect's GPU tests and benchmarks. Carry .whl with the device call and install it there:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
P="--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64 \
   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any"
# AutoAWQ imports datasets at import time; datasets needs dill and multiprocess, which the image lacks.
python3 -m pip download -q --no-deps $P -d .whl datasets==5.2.0 "dill<0.4.2" "multiprocess<0.70.20" \
    nvidia-ml-py==13.615.71
# autoawq is an sdist on the registry: build its (pure Python) wheel here.
python3 -m pip wheel -q --no-deps -w .whl autoawq==0.2.9
# GemLite (a candidate measured beside the project's own kernels) is an sdist too; pure Python + Triton.
python3 -m pip wheel -q --no-deps -w .whl gemlite==0.6.0.post2
ls -la .whl
