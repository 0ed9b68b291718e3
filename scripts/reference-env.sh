#!/usr/bin/env bash
# Creates .venv-reference with sentence-transformers and torch at the versions in
# tests/reference/requirements.txt (several GB). Needed only to regenerate the reference
# outputs (tests/reference/generate.py) and to run the benchmark's sentence-transformers side;
# the tests and CI never need it. Prints the venv's python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-reference"
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq python3-venv) >&2
  fi
  python3 -m venv "$venv" >&2
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$root/tests/reference/requirements.txt" >&2
echo "$venv/bin/python"
