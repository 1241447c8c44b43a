#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). Builds every binary
# the end-to-end tests start as real processes, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building binaries (zz, zz-agent, zz-agreement)"
cargo build --bins --workspace

echo "== running tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --profile ci
else
  cargo test --workspace --no-fail-fast
fi
