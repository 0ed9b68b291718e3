#!/usr/bin/env bash
# The project's test command (README, and .ci/run): formatting, lints, every test.
# One build profile (release) and one feature set serve the tests, clippy's dependency checks
# and the binaries: every backend that ships (CPU flex, cuda, wgpu) is compiled on every run,
# so none of them rots. The tests run on the CPU, and the GPU tests on wgpu through Mesa's
# lavapipe (a Vulkan driver on the CPU); CUDA needs a GPU, see README "GPU".
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
scripts/install-lavapipe.sh
features=(--workspace --features cuda,wgpu --locked)
cargo fmt --all -- --check
cargo clippy --release --all-targets "${features[@]}" -- -D warnings
# Default features too: code behind a GPU feature can leave items unused without it.
cargo clippy --release --all-targets --workspace --locked -- -D warnings
POOL_ENCODE_GPU_TEST_DEVICE="${POOL_ENCODE_GPU_TEST_DEVICE:-wgpu:0}" \
  cargo test --release "${features[@]}"
