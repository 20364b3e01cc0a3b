# Sourced by demo.sh and test.sh: create .venv (Python >= 3.11) and install vidpress with the given extras.
set -euo pipefail
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "vidpress needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${1:-}"
