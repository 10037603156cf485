#!/usr/bin/env bash
# Build the sdist and the wheel from this checkout, install the wheel (not editable) into a folder nothing of the
# checkout can shadow, then import every module from it and run the main job with its console script.
# Uses .venv (scripts/setup.sh) for the build tool and the dependencies; run by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# A copy of the checkout's files (tracked, and untracked but not ignored): no build/ or *.egg-info left by an
# editable install can leak into the build. `build` makes the sdist, then the wheel from the sdist.
mkdir "$WORK/src"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
    [[ -e "$f" ]] && { mkdir -p "$WORK/src/$(dirname "$f")"; cp -p "$f" "$WORK/src/$f"; }
done
.venv/bin/python -m build --outdir "$WORK/dist" "$WORK/src" > "$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; exit 1; }
if grep -qi "deprecat" "$WORK/build.log"; then
    grep -i "deprecat" "$WORK/build.log"; echo "the build warns of deprecated settings" >&2; exit 1
fi
sdist=$(ls "$WORK"/dist/*.tar.gz) wheel=$(ls "$WORK"/dist/*.whl)
listing=$(tar -tzf "$sdist")
[[ "$listing" == *awq_autoselect/loading/load.py* ]] || { echo "the sdist lacks awq_autoselect/loading" >&2; exit 1; }
.venv/bin/python -m pip install -q --no-deps --no-compile --target "$WORK/site" "$wheel"
cd "$WORK"   # not the checkout: its awq_autoselect/ would shadow the installed one
PYTHONPATH="$WORK/site" "$ROOT/.venv/bin/python" "$ROOT/scripts/check_installed.py" "$WORK/site" "$ROOT/awq_autoselect"
PYTHONPATH="$WORK/site" "$WORK/site/bin/awq-autoselect" report --demo "$WORK/demo-checkpoint" > "$WORK/demo.log" 2>&1 \
    || { cat "$WORK/demo.log"; exit 1; }
tail -3 "$WORK/demo.log"
PYTHONPATH="$WORK/site" "$ROOT/.venv/bin/python" -m awq_autoselect --help > /dev/null
echo "wheel $(basename "$wheel"): installed and ran"
