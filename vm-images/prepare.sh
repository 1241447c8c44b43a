#!/usr/bin/env bash
# Builds everything `zz up --backend libvirt` needs from the guest side:
# a static zz-agent (release, crt-static glibc) and the guest image in
# vm-images/out (build.sh). Quick when nothing changed: cargo builds nothing
# and build.sh compares its input hashes.
#
# usage: prepare.sh [--out DIR]
#   ZZ_AGENT_TARGET_DIR  cargo target dir of the static agent (default
#                        target/static: its RUSTFLAGS must not invalidate the
#                        normal build)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

out="$HERE/out"
while (($#)); do
    case "$1" in
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) zz_die "unknown argument: $1" ;;
    esac
done

target=x86_64-unknown-linux-gnu
target_dir=${ZZ_AGENT_TARGET_DIR:-$ROOT/target/static}
command -v cargo >/dev/null || zz_die "cargo not found"
zz_log "building the static zz-agent in $target_dir"
(cd "$ROOT" &&
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
        cargo build --release -q -p zz-agent --target "$target")
agent="$target_dir/$target/release/zz-agent"
[[ -f "$agent" ]] || zz_die "cargo built no $agent"

"$HERE/build.sh" --agent "$agent" --out "$out"
