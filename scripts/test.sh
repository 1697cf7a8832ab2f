#!/usr/bin/env bash
# Install (idempotent) and run the whole test suite, browser tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
${PYTHON:-python3} -m ruff check .  # lint first: pyflakes, pycodestyle errors, bugbear, import order
exec ${PYTHON:-python3} -m pytest -q "$@"
