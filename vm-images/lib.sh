# Shell helpers shared by build.sh, mkvm.sh, probe-accel.sh and smoke-test.sh.
# Each function is also the reference for what the orchestrator's Rust
# libvirt backend does (see README.md, "For the libvirt backend").
# shellcheck shell=bash

ZZ_VM_IMAGES=${ZZ_VM_IMAGES:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
ZZ_URI=${ZZ_URI:-qemu:///system}
# Printed by /init right before it runs the agent: the kernel booted and
# userland works. The accelerator probe waits for it.
ZZ_BOOT_MARKER="zz-guest: starting agent"

zz_log() { echo "[$(basename "$0")] $*" >&2; }
zz_die() { zz_log "error: $*"; exit 1; }
zz_sha256() { sha256sum "$1" | cut -d' ' -f1; }
zz_now_ms() { echo $(($(date +%s%N) / 1000000)); }
zz_virsh() { virsh -q -c "$ZZ_URI" "$@"; }

# Escapes a value for an XML attribute or text node.
zz_xml_escape() {
    local s=$1
    s=${s//'&'/'&amp;'}
    s=${s//'<'/'&lt;'}
    s=${s//'>'/'&gt;'}
    s=${s//"'"/'&apos;'}
    s=${s//'"'/'&quot;'}
    printf '%s' "$s"
}

# Kernel command line of a replica VM. Extra words (e.g. test knobs) follow.
zz_cmdline() {
    local name=$1 extra=${2:-}
    local line="console=ttyS0 no_timer_check panic=-1 zz.deployment=/etc/zz/deployment.toml zz.key=/etc/zz/replica.key zz.replica=$name zz.host_alias=10.0.2.2 quiet"
    [[ -n "$extra" ]] && line="$line $extra"
    printf '%s' "$line"
}

# zz_render_domain NAME MEMORY_MIB VCPUS TYPE KERNEL INITRD CMDLINE SERIAL_LOG
# Prints the domain XML filled from domain.xml.tmpl.
zz_render_domain() {
    (($# == 8)) || zz_die "zz_render_domain: 8 arguments, got $#"
    local keys=(NAME MEMORY_MIB VCPUS DOMAIN_TYPE KERNEL INITRD CMDLINE SERIAL_LOG)
    local values=("$@") xml i value
    xml=$(<"$ZZ_VM_IMAGES/domain.xml.tmpl")
    for i in "${!keys[@]}"; do
        value=$(zz_xml_escape "${values[$i]}")
        # Quoted replacement: bash 5.2 would otherwise expand '&' in it.
        xml=${xml//"@${keys[$i]}@"/"$value"}
    done
    if grep -qE '@[A-Z_]+@' <<<"$xml"; then
        zz_die "zz_render_domain: unfilled placeholder in domain.xml.tmpl"
    fi
    printf '%s\n' "$xml"
}

# zz_pervm_initrd SHARED_CPIO_GZ DEPLOYMENT KEY OUT
# Writes OUT = shared archive followed by a per-VM archive holding
# /etc/zz/deployment.toml and /etc/zz/replica.key. The kernel unpacks
# concatenated gzip'd cpio archives in order, later files winning.
zz_pervm_initrd() {
    local shared=$1 deployment=$2 key=$3 out=$4 tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/root/etc/zz"
    install -m 0644 "$deployment" "$tmp/root/etc/zz/deployment.toml"
    install -m 0600 "$key" "$tmp/root/etc/zz/replica.key"
    chmod 0755 "$tmp/root/etc" && chmod 0700 "$tmp/root/etc/zz"
    (cd "$tmp/root" && find etc | LC_ALL=C sort |
        cpio -o -H newc --owner 0:0 --reproducible --quiet) | gzip -9n >"$tmp/pervm.cpio.gz"
    (umask 077 && cat "$shared" "$tmp/pervm.cpio.gz" >"$out.tmp")
    mv "$out.tmp" "$out"
    rm -rf "$tmp"
}

# zz_wait_for FILE PATTERN TIMEOUT_S: 0 once a line of FILE matches the
# fixed string PATTERN, 1 on timeout.
zz_wait_for() {
    local file=$1 pattern=$2 deadline=$(($(zz_now_ms) + $3 * 1000))
    while (($(zz_now_ms) < deadline)); do
        if [[ -f "$file" ]] && grep -qF -- "$pattern" "$file"; then return 0; fi
        sleep 0.05
    done
    return 1
}

# Removes a domain whatever its state (running, paused, saved, shut off).
zz_domain_remove() {
    local name=$1
    zz_virsh destroy "$name" >/dev/null 2>&1 || true
    zz_virsh undefine --managed-save "$name" >/dev/null 2>&1 || true
    # libvirt keeps qemu's stderr per domain name; throwaway names would pile up.
    if [[ "$ZZ_URI" == qemu:///system ]]; then
        rm -f "/var/log/libvirt/qemu/$name.log"
    fi
}

# zz_probe_accel IMAGE_DIR WORKDIR [TIMEOUT_S]
# Boots the shared image once as a kvm domain and prints `kvm` if /init's
# boot marker reaches the serial log within TIMEOUT_S (default 20), else
# `qemu` (software emulation). Nested KVM can hang a guest kernel silently,
# so "the domain started" proves nothing; only the marker does.
zz_probe_accel() {
    local image=$1 work=$2 timeout=${3:-20}
    local name="zz-accel-probe-$$" log="$work/accel-probe.serial.log" xml
    if [[ ! -r /dev/kvm ]] || ! zz_virsh domcapabilities --virttype kvm >/dev/null 2>&1; then
        echo qemu
        return 0
    fi
    mkdir -p "$work"
    rm -f "$log"
    xml=$(zz_render_domain "$name" 256 1 kvm "$image/vmlinuz" "$image/initramfs.cpio.gz" \
        "$(zz_cmdline "$name")" "$log")
    zz_domain_remove "$name"
    printf '%s\n' "$xml" >"$work/accel-probe.xml"
    if zz_virsh create "$work/accel-probe.xml" >/dev/null 2>&1 &&
        zz_wait_for "$log" "$ZZ_BOOT_MARKER" "$timeout"; then
        zz_domain_remove "$name"
        echo kvm
    else
        zz_domain_remove "$name"
        echo qemu
    fi
}
