#!/usr/bin/env bash
# Chooses the domain type for `auto`: boots the shared image once as a kvm
# domain and prints `kvm` if /init's boot marker reaches the serial log
# within the timeout, else `qemu`. The orchestrator should probe once per
# host and remember the answer (a failed probe costs the whole timeout).
#
# usage: probe-accel.sh [--image DIR] [--timeout SECONDS]   (default 20)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

image="$HERE/out" timeout=20
while (($#)); do
    case "$1" in
        --image) image=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) zz_die "unknown argument: $1" ;;
    esac
done
image=$(cd "$image" && pwd)
[[ -f "$image/vmlinuz" && -f "$image/initramfs.cpio.gz" ]] || zz_die "no image in $image: run build.sh"

work=$(mktemp -d /tmp/zz-accel.XXXXXX)
chmod 0711 "$work"
trap 'rm -rf "$work"' EXIT
t0=$(zz_now_ms)
choice=$(zz_probe_accel "$image" "$work" "$timeout")
zz_log "chose $choice after $(($(zz_now_ms) - t0)) ms"
if [[ "$choice" == qemu && -s "$work/accel-probe.serial.log" ]]; then
    zz_log "kvm serial log: $(tail -c 300 "$work/accel-probe.serial.log" | tr '\n' ' ')"
fi
echo "$choice"
