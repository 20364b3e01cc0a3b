#!/usr/bin/env bash
# Set up .venv and run the test suite on transformers 5.17.0 (the GPU machine's) and on the newest
# release in the supported range. VIDPRESS_TRANSFORMERS="5.17.0" (or "latest") runs one of them only.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "[test]"
for version in ${VIDPRESS_TRANSFORMERS:-5.17.0 latest}; do
  if [ "$version" = latest ]; then spec="transformers>=5.17,<5.24"; else spec="transformers==$version"; fi
  .venv/bin/python -m pip install -q --upgrade "$spec"
  echo "== tests on transformers $(.venv/bin/python -c 'import transformers; print(transformers.__version__)')"
  .venv/bin/python -m pytest -q "$@"
done
