#!/usr/bin/env bash
# Builds the shared guest image of execution-replica VMs:
#   OUT/vmlinuz             Debian's cloud kernel, unmodified
#   OUT/initramfs.cpio.gz   busybox, the virtio modules, /init, /bin/zz-agent
#   OUT/manifest.txt        what went in (kernel package, modules, hashes)
# The image holds no identity: mkvm.sh appends a per-VM archive at provisioning.
# Rebuilt only when an input changes (their hashes are kept in OUT/stamp).
#
# usage: build.sh [--agent PATH] [--out DIR] [--kernel-package NAME] [--cache DIR]
# (the downloaded kernel .deb is kept in --cache, default vm-images/out/cache)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

# Modules the guest loads; their dependencies are resolved below.
# virtio_rng feeds the guest's entropy pool, so getrandom() never stalls.
ROOT_MODULES=(virtio_pci virtio_net virtio_rng)

agent=""
out="$HERE/out"
cache="$HERE/out/cache"
kernel_pkg="${ZZ_KERNEL_PACKAGE:-}"
while (($#)); do
    case "$1" in
        --agent) agent=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --kernel-package) kernel_pkg=$2; shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) zz_die "unknown argument: $1" ;;
    esac
done

# The agent must be static: the guest has no libc. A musl build is preferred,
# then a static glibc build (see README.md for both commands).
if [[ -z "$agent" ]]; then
    target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
    for candidate in \
        "$target_dir/x86_64-unknown-linux-musl/release/zz-agent" \
        "$target_dir/x86_64-unknown-linux-gnu/release/zz-agent" \
        "$target_dir/release/zz-agent"; do
        if [[ -f "$candidate" ]]; then agent=$candidate; break; fi
    done
    [[ -n "$agent" ]] || zz_die "no zz-agent build found under $target_dir; build it (README.md) or pass --agent"
fi
[[ -f "$agent" ]] || zz_die "agent not found: $agent"
if command -v file >/dev/null; then
    if file -L "$agent" | grep -q 'dynamically linked'; then
        zz_die "$agent is dynamically linked; the guest has no libc (build it static, see README.md)"
    fi
fi

busybox=/bin/busybox
[[ -x "$busybox" ]] || zz_die "$busybox missing: run install-deps.sh (busybox-static)"
file -L "$busybox" 2>/dev/null | grep -q 'dynamically linked' &&
    zz_die "$busybox is dynamic; install busybox-static"

mkdir -p "$out" "$cache"
out=$(cd "$out" && pwd)

# Kernel: the package the cloud meta-package currently points at, unless
# pinned. A cached .deb is reused, so a rebuild needs no network.
if [[ -z "$kernel_pkg" ]]; then
    kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ {print $2; exit}') || true
fi
if [[ -z "$kernel_pkg" ]]; then
    # No apt lists: fall back to the newest kernel already downloaded.
    newest=$(find "$cache" -maxdepth 1 -name 'linux-image-*-cloud-amd64_*.deb' | sort -V | tail -n 1)
    [[ -n "$newest" ]] || zz_die "cannot resolve linux-image-cloud-amd64 (run apt-get update)"
    kernel_pkg=$(basename "$newest" | cut -d_ -f1)
fi
newest_deb() { find "$cache" -maxdepth 1 -name "${kernel_pkg}_*.deb" | sort -V | tail -n 1; }
kernel_deb=$(newest_deb)
if [[ -z "$kernel_deb" ]]; then
    zz_log "downloading $kernel_pkg"
    # apt's _apt sandbox user cannot write into a root-owned dir; download
    # into a world-writable temp dir and move the result.
    dl=$(mktemp -d)
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -q "$kernel_pkg" >/dev/null 2>&1) ||
        { rm -rf "$dl"; zz_die "apt-get download $kernel_pkg failed"; }
    mv "$dl"/*.deb "$cache/"
    rm -rf "$dl"
    kernel_deb=$(newest_deb)
fi

inputs=(
    "kernel $(zz_sha256 "$kernel_deb") $(basename "$kernel_deb")"
    "busybox $(zz_sha256 "$busybox")"
    "agent $(zz_sha256 "$agent")"
    "init $(zz_sha256 "$HERE/guest/init")"
    "build $(zz_sha256 "$0") $(zz_sha256 "$HERE/lib.sh")"
    "modules ${ROOT_MODULES[*]}"
)
stamp=$(printf '%s\n' "${inputs[@]}")
if [[ -f "$out/stamp" && -f "$out/vmlinuz" && -f "$out/initramfs.cpio.gz" ]] &&
    [[ "$(cat "$out/stamp")" == "$stamp" ]]; then
    zz_log "image up to date in $out"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

zz_log "unpacking $(basename "$kernel_deb")"
dpkg-deb -x "$kernel_deb" "$work/kernel"
kver=$(basename "$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)")
moddir="$work/kernel/lib/modules/$kver"
[[ -d "$moddir" ]] || zz_die "no modules in $kernel_deb"

# Module name -> .ko path. File names may use '-' where module names use '_'.
module_file() {
    local pattern
    pattern="$(printf '%s' "$1" | sed 's/_/[-_]/g').ko*"
    find "$moddir/kernel" -name "$pattern" | head -n 1
}

# Depth-first: every module after all of its dependencies.
order=()
declare -A seen=()
resolve() {
    local mod=$1 path dep
    [[ -n "${seen[$mod]:-}" ]] && return
    seen[$mod]=1
    path=$(module_file "$mod")
    if [[ -z "$path" ]]; then
        # Built into this kernel: nothing to load.
        grep -q "/$mod.ko\$\|/${mod//_/-}.ko\$" "$moddir/modules.builtin" ||
            zz_die "module $mod neither in $kernel_pkg nor built in"
        return
    fi
    for dep in $(modinfo -F depends "$path" | tr ',' ' '); do
        resolve "$dep"
    done
    order+=("$mod:$path")
}
for m in "${ROOT_MODULES[@]}"; do resolve "$m"; done

rootfs="$work/root"
mkdir -p "$rootfs"/{bin,dev,etc,proc,sys,tmp,run,lib/modules/zz}
cp "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
install -m 0755 "$HERE/guest/init" "$rootfs/init"
install -m 0755 "$agent" "$rootfs/bin/zz-agent"
# Release builds carry debug info; the guest has no use for it, and a smaller
# initramfs unpacks faster under software emulation.
if command -v strip >/dev/null && file -L "$agent" 2>/dev/null | grep -q ELF; then
    strip --strip-debug "$rootfs/bin/zz-agent"
fi

: >"$rootfs/etc/zz-modules"
for entry in "${order[@]}"; do
    mod=${entry%%:*}
    path=${entry#*:}
    case "$path" in
        *.ko) cp "$path" "$rootfs/lib/modules/zz/$mod.ko" ;;
        *.ko.xz) "$busybox" xzcat "$path" >"$rootfs/lib/modules/zz/$mod.ko" ;;
        *.ko.gz) "$busybox" zcat "$path" >"$rootfs/lib/modules/zz/$mod.ko" ;;
        *.ko.zst) zstd -dqc "$path" >"$rootfs/lib/modules/zz/$mod.ko" ;;
        *) zz_die "unknown module format: $path" ;;
    esac
    echo "$mod" >>"$rootfs/etc/zz-modules"
done

# The kernel opens /dev/console for init before devtmpfs is mounted.
if [[ $EUID -eq 0 ]]; then
    mknod -m 0600 "$rootfs/dev/console" c 5 1
fi
printf 'root:x:0:0:root:/:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

# Fixed timestamps and sorted names: the same inputs give the same archive.
find "$rootfs" -exec touch -h -d @0 {} +
(cd "$rootfs" && find . -mindepth 1 | LC_ALL=C sort |
    cpio -o -H newc --owner 0:0 --reproducible --quiet) | gzip -9n >"$work/initramfs.cpio.gz"

{
    echo "kernel_package $kernel_pkg"
    echo "kernel_version $kver"
    echo "modules ${order[*]%%:*}"
    echo "agent $agent"
    printf '%s\n' "${inputs[@]}"
} >"$work/manifest.txt"

cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
# Outputs move in before the stamp, so a crash midway forces a rebuild.
rm -f "$out/stamp"
mv "$work/vmlinuz" "$out/vmlinuz"
mv "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
mv "$work/manifest.txt" "$out/manifest.txt"
chmod 0644 "$out/vmlinuz" "$out/initramfs.cpio.gz" "$out/manifest.txt"
printf '%s\n' "$stamp" >"$out/stamp"
zz_log "built $out (kernel $kver, modules: ${order[*]%%:*}, initramfs $(du -k "$out/initramfs.cpio.gz" | cut -f1) KiB)"
