#!/usr/bin/env bash
# The GPU checks (issue 6) on a lent device machine, which has CUDA, torch and
# sentence-transformers but no network, no Rust toolchain and no model, and takes at most
# 64 MiB of carried files per call. So: build here, carry the binaries and the model in stages,
# run there. See README "GPU checks".
#
#   here:   scripts/gpu-checks.sh bundle          build (--features cuda,wgpu), write .dev/gpu/1..K
#   device: bash scripts/gpu-checks.sh unpack N   one call per stage, carrying .dev/gpu/N
#           bash scripts/gpu-checks.sh test NAME… gpu, pool, dense_reference, sparse_reference
#           bash scripts/gpu-checks.sh bench-minilm | bench-base | bench-docs [BENCH ARGS…] | stream
#
# Device-side steps write their logs to $OUT (which comes back) and print a summary. Files are
# unpacked to $GPU_CHECKS_DIR (default /tmp/gpu-checks), which lasts while the machine stays warm.
# GPU_CHECKS_DEVICE (default cuda:0), GPU_CHECKS_LIMIT (texts per bench or stream run),
# GPU_CHECKS_ALL=0 (the GPU tests on a few texts, not all 211) and bench arguments (`--skip-st`)
# let the device steps be rehearsed here, on wgpu:0 (lavapipe):
#   GPU_CHECKS_DEVICE=wgpu:0 GPU_CHECKS_ALL=0 GPU_CHECKS_LIMIT=40 OUT=/tmp/o \
#     bash scripts/gpu-checks.sh bench-minilm --skip-st
set -euo pipefail
cd "$(dirname "$0")/.."
bundle_dir=.dev/gpu
work=${GPU_CHECKS_DIR:-/tmp/gpu-checks}
device=${GPU_CHECKS_DEVICE:-cuda:0}
out=${OUT:-$work/out}
minilm=models/all-MiniLM-L6-v2
# Test binaries carried, by their test target's name.
tests=(gpu pool dense_reference sparse_reference)

bundle() {
  scripts/fetch-model.sh >/dev/null
  local features=(--release --workspace --features cuda,wgpu --locked)
  # Bins first: the test build then rebuilds pool-encode-worker with the pool tests' fault
  # injection (inert without its environment variables), which the pool tests need.
  cargo build "${features[@]}" --bins
  local targets=" ${tests[*]} "
  local executables
  executables=$(cargo test "${features[@]}" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
wanted = sys.argv[1].split()
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") \
            and m["target"]["name"] in wanted and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' "$targets")
  rm -rf "$bundle_dir" && mkdir -p "$bundle_dir/all"
  local name path
  while read -r name path; do
    strip -o "$bundle_dir/all/$name" "$path"
  done <<<"$executables"
  for name in pool-encode-bench stream-bench pool-encode-worker pool-encode; do
    strip -o "$bundle_dir/all/$name" "target/release/$name"
  done
  xz -T0 -6 "$bundle_dir"/all/*
  tar -C "$minilm" --exclude model.safetensors -cJf "$bundle_dir/all/minilm-files.tar.xz" .
  split -b 20M -d "$minilm/model.safetensors" "$bundle_dir/all/minilm-weights."
  tar -C /usr/share/games -cJf "$bundle_dir/all/fortunes.tar.xz" fortunes
  (cd "$bundle_dir/all" && sha256sum -- * >../SHA256SUMS)
  # Greedy stages under the per-call limit, which the tracked files share.
  local tracked
  tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
  local stage_bytes=$((62 * 1024 * 1024 - tracked)) stage=1 used=0 size file
  mkdir -p "$bundle_dir/$stage"
  while read -r size file; do
    if ((used > 0 && used + size > stage_bytes)); then
      stage=$((stage + 1)) used=0
      mkdir -p "$bundle_dir/$stage"
    fi
    mv "$bundle_dir/all/$file" "$bundle_dir/$stage/"
    used=$((used + size))
  done < <(cd "$bundle_dir/all" && stat -c '%s %n' -- * | sort -rn)
  rmdir "$bundle_dir/all"
  cp "$bundle_dir/SHA256SUMS" "$bundle_dir/1/"
  du -sh "$bundle_dir"/[0-9]*
  echo "Carry each stage in its own call, back to back (the machine is let go after a short idle):"
  local n
  for ((n = 1; n <= stage; n++)); do
    echo "  run(carry=[\"$bundle_dir/$n\"], command=\"bash scripts/gpu-checks.sh unpack $n\")"
  done
}

unpack() {
  local stage=$1
  mkdir -p "$work/parts"
  cp "$bundle_dir/$stage"/* "$work/parts/"
  cd "$work/parts"
  local missing
  missing=$(awk '{print $2}' SHA256SUMS | while read -r f; do [[ -e $f ]] || echo "$f"; done)
  if [[ -n $missing ]]; then
    echo "stage $stage unpacked; still to carry: $(echo $missing)"
    return
  fi
  sha256sum --quiet -c SHA256SUMS
  cd - >/dev/null
  mkdir -p "$work/bin" "$minilm" target/release /usr/share/games
  local f
  for f in "$work"/parts/*.xz; do
    [[ $f == *.tar.xz ]] && continue
    local name
    name=$(basename "$f" .xz)
    xz -dc "$f" >"$work/bin/$name" && chmod +x "$work/bin/$name"
  done
  # Test and bench binaries find their worker next to them or one folder up.
  cp "$work/bin/pool-encode-worker" target/release/
  tar -C "$minilm" -xJf "$work/parts/minilm-files.tar.xz"
  cat "$work"/parts/minilm-weights.* >"$minilm/model.safetensors"
  tar -C /usr/share/games -xJf "$work/parts/fortunes.tar.xz"
  echo "all stages unpacked: $(ls "$work/bin" | tr '\n' ' ')"
}

# Runs a binary with a time limit, its log in $OUT, and prints the log's summary lines.
logged() {
  local name=$1 limit=$2 pattern=$3
  shift 3
  local start=$SECONDS rc=0
  timeout "$limit" "$@" >"$out/$name.log" 2>&1 || rc=$?
  echo "== $name: rc $rc after $((SECONDS - start)) s (log: $name.log)"
  grep -E "$pattern" "$out/$name.log" | grep -v -e '^\[worker' -e XDG_RUNTIME_DIR | tail -40 || true
}

test_step() {
  (($# > 0)) || set -- "${tests[@]}"
  export POOL_ENCODE_GPU_TEST_DEVICE=$device
  [[ ${GPU_CHECKS_ALL:-1} == 0 ]] || export POOL_ENCODE_GPU_TEST_ALL=1
  local name
  for name in "$@"; do
    case $name in
      gpu | pool) ;;
      dense_reference | sparse_reference) export POOL_ENCODE_TEST_DEVICE=$device ;;
      *) echo "unknown test $name (one of: ${tests[*]})" >&2 && exit 2 ;;
    esac
    logged "test-$name" 280 '^test |result:|panicked|worst|retrying|allocate' \
      "$work/bin/$name" --test-threads 2 --nocapture
  done
}

bench() {
  local name=$1
  shift
  local limit=()
  [[ -n ${GPU_CHECKS_LIMIT:-} ]] && limit=(--limit "$GPU_CHECKS_LIMIT")
  logged "$name" 290 'texts/s|agree|cos|diff|ST|GPU|error' \
    "$work/bin/pool-encode-bench" --device "$device" --python python3 --precisions f32,f16 \
    --concurrent-batches 1,2 "${limit[@]}" "$@" "${bench_args[@]}"
}

main() {
  local step=${1:-}
  shift || true
  [[ $step == bundle ]] || mkdir -p "$out"
  bench_args=("$@")
  if [[ $step != bundle && $step != unpack ]]; then
    export LD_LIBRARY_PATH=/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total \
      --format=csv,noheader
    [[ -x $work/bin/pool-encode-bench ]] || { echo "unpack every stage first" >&2 && exit 2; }
  fi
  case $step in
    bundle) bundle ;;
    unpack) unpack "$1" ;;
    test) test_step "$@" ;;
    bench-minilm)
      bench minilm-b32 --batch-size 32
      bench minilm-b256 --batch-size 256 --max-batch-tokens 32768
      ;;
    bench-docs)
      # Documents of 3,000+ words: ST tokenizes each whole, pool-encode a prefix.
      bench minilm-docs --corpus fortunes-docs --batch-size 256 --max-batch-tokens 32768
      ;;
    bench-base)
      python3 scripts/make_base_model.py --tokenizer-from "$minilm" --output "$work/base" \
        >"$out/make-base.log" 2>&1
      GPU_CHECKS_LIMIT=${GPU_CHECKS_LIMIT:-5000} bench base-b32 --model "$work/base" --batch-size 32
      ;;
    stream)
      logged stream 290 'texts|RSS|MB|error' "$work/bin/stream-bench" --devices "$device" \
        --texts "${GPU_CHECKS_LIMIT:-100000,1000000}"
      ;;
    *)
      sed -n '2,16p' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
