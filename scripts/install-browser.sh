#!/usr/bin/env bash
# Installs headless Chromium and chromedriver (Debian packages) for the
# dashboard end-to-end test (tests/tests/dashboard_chromium.rs). Idempotent:
# does nothing but print the versions when both are already present.
set -euo pipefail

PKGS=(chromium chromium-driver)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install ${PKGS[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

installed() {
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

install() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${PKGS[@]}"
}

if ! installed; then
  # Refresh the package lists only when there are none or the install fails
  # (stale lists point at versions the mirror no longer has).
  if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null || ! install; then
    "${SUDO[@]}" apt-get update
    install
  fi
fi

chromium --version
chromedriver --version
