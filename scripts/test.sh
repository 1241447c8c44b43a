#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). On a machine with
# root and apt it first installs what the VM and browser tests need; it
# builds every binary the end-to-end tests start as real processes (and the
# guest image when libvirt is reachable), then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = true ]; then
  # In CI nothing may be skipped for want of a hypervisor or a browser.
  export ZZ_REQUIRE_LIBVIRT=1 ZZ_REQUIRE_BROWSER=1
  # A one-off build gains nothing from incremental caches but their disk.
  export CARGO_INCREMENTAL=0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "${ZZ_SKIP_SETUP:-}" != 1 ]; then
  echo "== installing test dependencies (scripts/setup.sh)"
  scripts/setup.sh
fi

if [ "${CI:-}" = true ]; then
  # The committed example components must be what their sources build to.
  echo "== rebuilding the example Wasm components (scripts/build-examples.sh --check)"
  scripts/build-examples.sh --check
fi

features=()
if pkg-config --exists libvirt 2>/dev/null; then
  features=(--features zz/libvirt)
fi

echo "== building binaries (zz, zz-agent, zz-agreement) ${features[*]}"
cargo build --bins --workspace "${features[@]}"

if virsh -c qemu:///system list >/dev/null 2>&1; then
  echo "== building the guest image (vm-images/prepare.sh)"
  vm-images/prepare.sh
fi

echo "== running tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace "${features[@]}" --no-fail-fast --profile ci
else
  cargo test --workspace "${features[@]}" --no-fail-fast
fi
