#!/usr/bin/env bash
# Peak memory of pool-encode's worker processes: the measurement behind the default CPU worker
# count (crates/pool/src/memory.rs, `ModelFootprint::worker_bytes`).
#
#   scripts/worker-memory.sh MODEL DEVICES [INPUT [ENCODE FLAGS…]]
#   scripts/worker-memory.sh models/all-MiniLM-L6-v2 cpu:1
#   scripts/worker-memory.sh models/all-MiniLM-L6-v2 cpu:2 long --batch-size 64
#
# Encodes INPUT (default tests/data/texts.jsonl, three times over; `long`: 96 texts of 700 words
# cut from it, past any max_seq_length, so every batch is full) with the release binary and
# prints each worker's peak anonymous memory (RssAnon, sampled every 0.1 s; the mapped weights
# file is shared between workers and not counted) and the coordinator's.
set -euo pipefail
cd "$(dirname "$0")/.."
model=$1 devices=$2 input=${3:-}
shift $(($# < 3 ? $# : 3))
binary=${CARGO_TARGET_DIR:-target}/release/pool-encode
[ -x "$binary" ] || cargo build --release --bin pool-encode
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ -z "$input" ]; then
  input=$work/input.jsonl
  for _ in 1 2 3; do cat tests/data/texts.jsonl; done >"$input"
elif [ "$input" = long ]; then
  input=$work/long.jsonl
  python3 - "$input" <<'PYTHON'
import json, sys
words = " ".join(json.loads(line)["text"] for line in open("tests/data/texts.jsonl")).split()
with open(sys.argv[1], "w") as out:
    for i in range(96):
        start = i * 700 % (len(words) - 700)
        out.write(json.dumps({"text": " ".join(words[start:start + 700])}) + "\n")
PYTHON
fi
"$binary" encode --model "$model" --input "$input" --output "$work/out.npy" --devices "$devices" \
  --progress-interval 0 "$@" >/dev/null 2>"$work/stderr" &
coordinator=$!
declare -A peak
coordinator_peak=0
rss() { awk '/^RssAnon/ {print $2}' "/proc/$1/status" 2>/dev/null || true; }
while kill -0 "$coordinator" 2>/dev/null; do
  for pid in $(pgrep -P "$coordinator" || true); do
    kib=$(rss "$pid")
    if [ -n "$kib" ] && [ "$kib" -gt "${peak[$pid]:-0}" ]; then peak[$pid]=$kib; fi
  done
  kib=$(rss "$coordinator")
  if [ -n "$kib" ] && [ "$kib" -gt "$coordinator_peak" ]; then coordinator_peak=$kib; fi
  sleep 0.1
done
if ! wait "$coordinator"; then
  cat "$work/stderr" >&2
  exit 1
fi
echo "coordinator: $((coordinator_peak / 1024)) MiB"
for pid in "${!peak[@]}"; do echo "worker $pid: $((peak[$pid] / 1024)) MiB"; done
