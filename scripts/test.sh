#!/usr/bin/env bash
# The project's test command (README, and .ci/run): formatting, lints, every test.
# One build profile (release) serves the tests, the binary and clippy's dependency checks.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
cargo test --release --workspace --locked
