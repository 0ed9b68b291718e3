#!/usr/bin/env bash
# The main job on a sample corpus: fetches all-MiniLM-L6-v2 if absent, encodes
# tests/data/texts.jsonl (211 texts) with configs/cpu.toml, and prints where the output went.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
cargo run --release --quiet -p pool-encode -- encode --config configs/cpu.toml "$@"
