#!/usr/bin/env bash
# Installs and starts what the full test suite needs beyond Rust: QEMU and
# libvirt (VM tests: packages, virtlogd, libvirtd) and Chromium with its
# driver (dashboard test). Needs root and apt; idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
vm-images/install-deps.sh
scripts/install-browser.sh
