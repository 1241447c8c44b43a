#!/usr/bin/env bash
# Installs what the guest image build and the libvirt backend need, and starts
# the libvirt daemons by hand (there is no systemd here). Idempotent: a second
# run with everything present does no apt work and returns in well under 1 s.
set -euo pipefail

PACKAGES=(
    qemu-system-x86        # the emulator libvirt drives
    libvirt-daemon-system  # libvirtd, virtlogd, the qemu driver
    libvirt-clients        # virsh
    libvirt-dev            # for the `virt` crate in the orchestrator
    busybox-static         # the guest's userland
    cpio                   # initramfs archives
    kmod                   # modinfo, to resolve module dependencies
    pkg-config             # the `virt` crate finds libvirt through it
    make                   # builds jemalloc, the zz binary's allocator (tikv-jemalloc-sys)
    iproute2               # ip netns: the multi-host tests run hosts as network namespaces
)
URI=qemu:///system

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when an install fails on stale ones, or
    # when there are none at all: `apt-get update` costs seconds every time.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        apt-get update -q
    fi
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
fi

# What udev would do: /dev/kvm rw for group kvm, which libvirt-qemu is in.
# Left root-only, libvirt sees "KVM was enabled when probing, but it is not
# available now", drops its qemu capabilities cache and re-probes qemu (4-10 s)
# on every domain start and restore, even for type='qemu' domains.
if [[ -c /dev/kvm ]] && getent group kvm >/dev/null; then
    if [[ "$(stat -c '%G %a' /dev/kvm)" != "kvm 660" ]]; then
        chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
    fi
fi

# Daemons. pidof matches the exact executable name, not a command-line pattern.
if ! pidof virtlogd >/dev/null; then
    virtlogd -d
fi
if ! pidof libvirtd >/dev/null; then
    libvirtd -d
fi

for _ in $(seq 1 100); do
    if virsh -c "$URI" list --all >/dev/null 2>&1; then
        exit 0
    fi
    sleep 0.1
done
echo "install-deps: libvirtd did not answer on $URI within 10 s" >&2
virsh -c "$URI" version >&2 || true
exit 1
