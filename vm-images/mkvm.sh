#!/usr/bin/env bash
# Provisions the files of one replica VM from the shared image; defines nothing.
#   DIR/initrd.img   shared initramfs + a per-VM archive with
#                    /etc/zz/deployment.toml and /etc/zz/replica.key (0600)
#   DIR/cmdline      the kernel command line
#   DIR/domain.xml   the libvirt domain, serial console to DIR/serial.log
# Then: virsh -c qemu:///system define DIR/domain.xml && virsh start NAME
#
# usage: mkvm.sh NAME --deployment FILE --key FILE --out DIR
#            [--image DIR] [--type qemu|kvm|auto] [--memory MIB]
#            [--extra-cmdline 'k=v ...']
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

usage() { sed -n '2,11p' "$0"; exit "${1:-0}"; }
(($#)) || usage 1
name=$1
shift
[[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || zz_die "bad VM name: $name"

deployment="" key="" dir="" image="$HERE/out" type=qemu memory=256 extra=""
while (($#)); do
    case "$1" in
        --deployment) deployment=$2; shift 2 ;;
        --key) key=$2; shift 2 ;;
        --out) dir=$2; shift 2 ;;
        --image) image=$2; shift 2 ;;
        --type) type=$2; shift 2 ;;
        --memory) memory=$2; shift 2 ;;
        --extra-cmdline) extra=$2; shift 2 ;;
        -h|--help) usage ;;
        *) zz_die "unknown argument: $1" ;;
    esac
done
[[ -f "$deployment" ]] || zz_die "--deployment FILE required"
[[ -f "$key" ]] || zz_die "--key FILE required"
[[ -n "$dir" ]] || zz_die "--out DIR required"
[[ "$memory" =~ ^[0-9]+$ ]] || zz_die "bad --memory: $memory"
image=$(cd "$image" && pwd)
[[ -f "$image/vmlinuz" && -f "$image/initramfs.cpio.gz" ]] ||
    zz_die "no image in $image: run build.sh"

# The directory holds the replica's private key (inside initrd.img) but qemu,
# running as another user, must traverse it to open the kernel and initrd.
mkdir -p "$dir"
chmod 0711 "$dir"
dir=$(cd "$dir" && pwd)

case "$type" in
    qemu|kvm) ;;
    auto) type=$(zz_probe_accel "$image" "$dir") ;;
    *) zz_die "bad --type: $type" ;;
esac

zz_pervm_initrd "$image/initramfs.cpio.gz" "$deployment" "$key" "$dir/initrd.img"
cmdline=$(zz_cmdline "$name" "$extra")
printf '%s\n' "$cmdline" >"$dir/cmdline"
zz_render_domain "$name" "$memory" 1 "$type" "$image/vmlinuz" "$dir/initrd.img" \
    "$cmdline" "$dir/serial.log" >"$dir/domain.xml"
zz_log "$name: $dir/domain.xml (type $type, $memory MiB)"
