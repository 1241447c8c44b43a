#!/usr/bin/env bash
# A second "libvirt host" inside an existing network namespace, reachable over
# qemu+tcp://ADDR/system, and killed like a host dying.
#
#   libvirt-host.sh up NS ADDR STATEDIR   prints the URI once virsh can use it
#   libvirt-host.sh down NS STATEDIR      SIGKILLs every process in NS, removes
#                                         STATEDIR (idempotent; keeps NS)
#
# NS must already hold ADDR (IPv4, no prefix) on an interface the root
# namespace can reach. The daemons run in NS and in a private mount namespace
# where STATEDIR/{etc,run,lib,cache,log} are bind-mounted over /etc/libvirt,
# /run/libvirt and /var/{lib,cache,log}/libvirt, so the root namespace's
# libvirtd, its domains and its files are never seen or touched. The mount
# namespace dies with its last process, so `down` leaves no mounts behind.
set -euo pipefail

PORT=16509
MARKER=.libvirt-host
UP_TIMEOUT_S=${LIBVIRT_HOST_UP_TIMEOUT_S:-20}

log() { echo "libvirt-host.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '5,7p' "$0" >&2; exit 2; }

# STATEDIR is rm -rf'd by down: insist on an absolute, non-trivial path.
check_statedir() {
    local d=$1
    [[ "$d" == /* ]] || die "STATEDIR must be absolute: $d"
    [[ "$d" != *[[:space:]]* && "$d" != *..* ]] || die "STATEDIR must not contain spaces or '..': $d"
    case "${d%/}/" in
        /etc/libvirt/* | /run/libvirt/* | /var/run/* | /var/lib/libvirt/* | /var/cache/libvirt/* | \
            /var/log/libvirt/* | /proc/* | /sys/* | /dev/*)
            die "refusing STATEDIR $d" ;;
    esac
    # A top-level or second-level system dir (/, /tmp, /var/lib, ...) is too broad.
    [[ "${d%/}" == /*/*/* || "${d%/}" == /tmp/* ]] || die "STATEDIR too shallow: $d"
}

netns_exists() { [[ -e "/run/netns/$1" ]]; }

pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
pid_from() { tr -dc 0-9 2>/dev/null <"$1" || true; }

dump_logs() {
    local statedir=$1 f
    for f in "$statedir/launch.err" "$statedir/log/libvirtd.log" "$statedir/log/virtlogd.log"; do
        [[ -s "$f" ]] || continue
        log "---- $f (last 40 lines) ----"
        tail -n 40 "$f" >&2
    done
}

# Kills everything in NS (and our daemons by pid file, should NS be gone)
# and waits up to ~10 s for them to disappear.
kill_host() {
    local ns=$1 statedir=$2 pids i pid
    for i in $(seq 1 200); do
        pids=""
        if netns_exists "$ns"; then pids=$(ip netns pids "$ns" 2>/dev/null || true); fi
        for pid in $(pid_from "$statedir/libvirtd.pid") $(pid_from "$statedir/virtlogd.pid"); do
            # Only our daemon: a stale pid file must not kill a reused pid.
            if pid_alive "$pid" && grep -qaF "$statedir" "/proc/$pid/cmdline" 2>/dev/null; then
                pids="$pids $pid"
            fi
        done
        [[ -n "${pids// /}" ]] || return 0
        # shellcheck disable=SC2086 # a list of pids
        kill -KILL $pids 2>/dev/null || true
        sleep 0.05
    done
    die "processes still alive in $ns after SIGKILL: $pids"
}

# The private copy of /etc/libvirt: the root daemon's configuration files, but
# none of its domains, pools, secrets or autostart links.
make_etc() {
    local statedir=$1 addr=$2 etc=$1/etc
    rm -rf "$etc"
    cp -a /etc/libvirt "$etc"
    find "$etc" -depth -type d -name autostart -exec rm -rf {} +
    find "$etc/qemu" -maxdepth 1 -type f -name '*.xml' -delete 2>/dev/null || true
    find "$etc/storage" -maxdepth 1 -type f -name '*.xml' -delete 2>/dev/null || true
    rm -rf "$etc/secrets" && mkdir -m 0700 "$etc/secrets"

    cat >"$etc/libvirtd.conf" <<EOF
# Written by libvirt-host.sh: plain TCP on $addr only, no auth (test hosts).
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
tcp_port = "$PORT"
auth_tcp = "none"
log_outputs = "3:file:$statedir/log/libvirtd.log"
EOF
    cat >"$etc/virtlogd.conf" <<EOF
log_outputs = "3:file:$statedir/log/virtlogd.log"
EOF
    # Two daemons must not manage the same cgroupfs dirs (machine names are
    # qemu-ID-NAME with IDs restarting at 1). `ip netns exec` remounts /sys
    # without the cgroup mounts anyway; this makes "no cgroups" explicit.
    sed -i 's/^[[:space:]]*cgroup_controllers[[:space:]]*=/#&/' "$etc/qemu.conf"
    cat >>"$etc/qemu.conf" <<EOF

# libvirt-host.sh: a second daemon on this machine, no cgroups.
cgroup_controllers = [ ]
EOF
}

cmd_up() {
    (($# == 3)) || usage
    local ns=$1 addr=$2 statedir=${3%/} uri i lpid
    check_statedir "$statedir"
    uri="qemu+tcp://$addr/system"
    netns_exists "$ns" || die "no network namespace $ns"
    ip -n "$ns" -4 -o addr show | grep -q " inet $addr/" ||
        die "$addr is not an address in netns $ns"

    # Already up and answering: nothing to do.
    lpid=$(pid_from "$statedir/libvirtd.pid")
    if pid_alive "$lpid" && virsh -q -c "$uri" list >/dev/null 2>&1; then
        echo "$uri"
        return 0
    fi
    if [[ -n "$(ip netns pids "$ns")" ]]; then
        die "netns $ns already has processes ($(ip netns pids "$ns" | tr '\n' ' ')); run down first"
    fi
    if [[ -e "$statedir" && ! -e "$statedir/$MARKER" ]] &&
        [[ -n "$(ls -A "$statedir")" ]]; then
        die "$statedir exists, is not empty and was not made by this script"
    fi

    mkdir -p "$statedir"
    touch "$statedir/$MARKER"
    rm -f "$statedir"/{libvirtd,virtlogd}.pid "$statedir/launch.err"
    mkdir -p "$statedir"/{run,lib,cache,log}
    chmod 0755 "$statedir/run" "$statedir/lib" "$statedir/log"
    chmod 0711 "$statedir/cache"
    # Installed by the libvirt package on a real host: the qemu driver's log
    # dir (also where zz puts a remote VM's console, see console_path).
    mkdir -p "$statedir/log/qemu"
    chmod 0700 "$statedir/log/qemu"
    # The default pool parent; a dir pool under it must be reachable by qemu.
    mkdir -p "$statedir/lib/images"
    chmod 0711 "$statedir/lib/images"
    make_etc "$statedir" "$addr"
    # Seed the qemu capabilities cache (read-only copy; libvirt re-validates
    # it against the binaries): saves a ~4 s probe at the first domain start.
    if [[ -d /var/cache/libvirt/qemu/capabilities ]]; then
        mkdir -p "$statedir/cache/qemu" && chmod 0711 "$statedir/cache/qemu"
        cp -a /var/cache/libvirt/qemu/capabilities "$statedir/cache/qemu/" 2>/dev/null || true
    fi

    # `ip netns exec` already unshares the mount namespace (slave propagation);
    # unshare makes it private so no mount below can reach the root namespace.
    # shellcheck disable=SC2016 # expanded by the inner shell
    if ! ip netns exec "$ns" unshare --mount --propagation private -- bash -euc '
        s=$1
        mount --bind "$s/etc" /etc/libvirt
        mount --bind "$s/run" /run/libvirt
        mount --bind "$s/lib" /var/lib/libvirt
        mount --bind "$s/cache" /var/cache/libvirt
        mount --bind "$s/log" /var/log/libvirt
        ip link set lo up
        virtlogd -d -p "$s/virtlogd.pid" -f "$s/etc/virtlogd.conf"
        libvirtd -d --listen -p "$s/libvirtd.pid" -f "$s/etc/libvirtd.conf"
    ' libvirt-host "$statedir" </dev/null >"$statedir/launch.err" 2>&1; then
        dump_logs "$statedir"
        kill_host "$ns" "$statedir"
        die "starting the daemons in $ns failed"
    fi

    for i in $(seq 1 $((UP_TIMEOUT_S * 10))); do
        if virsh -q -c "$uri" list >/dev/null 2>"$statedir/virsh.err"; then
            echo "$uri"
            return 0
        fi
        lpid=$(pid_from "$statedir/libvirtd.pid")
        if ((i > 10)) && ! pid_alive "$lpid"; then
            break
        fi
        sleep 0.1
    done
    log "virsh -c $uri list: $(cat "$statedir/virsh.err")"
    dump_logs "$statedir"
    kill_host "$ns" "$statedir"
    die "libvirtd in $ns did not answer on $uri within ${UP_TIMEOUT_S}s (processes killed, $statedir kept)"
}

cmd_down() {
    (($# == 2)) || usage
    local ns=$1 statedir=${2%/}
    check_statedir "$statedir"
    if [[ -e "$statedir" && ! -e "$statedir/$MARKER" ]] &&
        [[ -n "$(ls -A "$statedir")" ]]; then
        die "$statedir was not made by this script; not removing it"
    fi
    kill_host "$ns" "$statedir"
    rm -rf "$statedir"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) shift; cmd_down "$@" ;;
    *) usage ;;
esac
