#!/usr/bin/env bash
# Install (idempotent) and launch the app on the embedded model at http://127.0.0.1:7860
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec ${PYTHON:-python3} app.py "$@"
