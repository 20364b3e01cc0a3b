#!/usr/bin/env bash
# Set up .venv and run the offline demo (a generated needle video, the embedded default model).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
.venv/bin/vidpress demo "$@"
