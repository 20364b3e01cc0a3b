#!/usr/bin/env bash
# Set up .venv and run the offline demo (a generated needle video, the embedded default model).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh ""  # no extras (an explicit argument keeps "$@" for the demo)
.venv/bin/vidpress demo "$@"
