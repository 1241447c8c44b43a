#!/usr/bin/env bash
# End-to-end check of the guest image on qemu:///system, before the real
# agent exists: builds the image with guest/standin-agent.sh, provisions one
# VM with mkvm.sh, and checks from the host that
#   - it boots and dials 127.0.0.1 through the 10.0.2.2 host alias, with the
#     injected deployment and key, no DNS and no default route;
#   - suspend stops it and resume continues it;
#   - managed save + start restores it (the agent has to reconnect);
#   - when the agent exits, /init powers the VM off.
# Prints the timings, then "N passed, N failed". Exits non-zero on any
# failure; removes its domain and files whatever happens.
#
# env: ZZ_SMOKE_TYPE=qemu|kvm|auto (default qemu), ZZ_SMOKE_KEEP=1 keeps the
#      work dir, ZZ_SMOKE_BOOT_TIMEOUT (s, default 60).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

type=${ZZ_SMOKE_TYPE:-qemu}
boot_timeout=${ZZ_SMOKE_BOOT_TIMEOUT:-60}
name="zz-smoke-$$"
passed=0
failed=0
listener_pid=""
declare -A timing=()

work=$(mktemp -d /tmp/zz-smoke.XXXXXX)
# qemu runs as libvirt-qemu and must reach the kernel, initrd and serial log.
chmod 0711 "$work"
events="$work/events.log"

cleanup() {
    local rc=$?
    # A failure inside $(...) exits only that subshell; count it here.
    ((rc == 0 || failed > 0)) || failed=1
    zz_domain_remove "$name"
    [[ -n "$listener_pid" ]] && kill "$listener_pid" 2>/dev/null
    if zz_virsh dominfo "$name" >/dev/null 2>&1; then
        echo "FAIL: domain $name still exists after cleanup" >&2
        failed=$((failed + 1))
        rc=1
    fi
    if [[ "${ZZ_SMOKE_KEEP:-}" == 1 ]]; then
        echo "work dir kept: $work" >&2
    else
        rm -rf "$work"
    fi
    echo "smoke: $passed passed, $failed failed"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); echo "ok: $*"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*" >&2
    if [[ -f "$work/vm/serial.log" ]]; then
        echo "--- serial log (last 20 lines)" >&2
        tail -n 20 "$work/vm/serial.log" >&2
    fi
    exit 1
}
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }

# await_event FROM_LINE REGEX TIMEOUT_S: prints the first event after line
# FROM_LINE matching REGEX; fails the test on timeout.
await_event() {
    local from=$1 regex=$2 deadline=$(($(zz_now_ms) + $3 * 1000)) hit
    while (($(zz_now_ms) < deadline)); do
        hit=$(tail -n "+$((from + 1))" "$events" | grep -m 1 -E -- "$regex" || true)
        if [[ -n "$hit" ]]; then printf '%s\n' "$hit"; return 0; fi
        sleep 0.02
    done
    fail "no event matching '$regex' within $3 s"
}
event_count() { wc -l <"$events"; }
domstate() { zz_virsh domstate "$name" 2>/dev/null | head -n 1; }
# timed KEY CMD...: runs CMD, records its wall time in ms under KEY.
timed() {
    local key=$1 t0
    shift
    t0=$(zz_now_ms)
    "$@" >/dev/null || fail "$* failed"
    timing[$key]=$(($(zz_now_ms) - t0))
}

"$HERE/install-deps.sh"
python=/usr/bin/python3
[[ -x "$python" ]] || python=python3

"$HERE/build.sh" --agent "$HERE/guest/standin-agent.sh" --out "$HERE/out/smoke-image"

# Host end: a listener on loopback, port chosen by the kernel.
: >"$events"
"$python" "$HERE/smoke-listener.py" "$work/port" "$work/exit-request" 300 >>"$events" 2>&1 &
listener_pid=$!
zz_wait_for "$work/port" "" 10 || fail "listener did not start"
port=$(<"$work/port")

head -c 512 /dev/urandom | base64 >"$work/deployment.toml"
head -c 32 /dev/urandom >"$work/replica.key"
"$HERE/mkvm.sh" "$name" --deployment "$work/deployment.toml" --key "$work/replica.key" \
    --out "$work/vm" --image "$HERE/out/smoke-image" --type "$type" \
    --extra-cmdline "zz.smoke_port=$port"
zz_virsh define "$work/vm/domain.xml" >/dev/null || fail "virsh define"

# Boot.
t0=$(zz_now_ms)
zz_virsh start "$name" >/dev/null || fail "virsh start"
hello=$(await_event 0 ' line hello ' "$boot_timeout")
timing[boot_to_connect]=$((${hello%% *} - t0))
conn=$(sed -E 's/.* conn=([0-9]+) .*/\1/' <<<"$hello")
open=$(grep -m 1 -E " conn=$conn peer=" "$events")
check "connection arrives from 127.0.0.1 (${open#* conn="$conn" })" grep -q "peer=127.0.0.1:" <<<"$open"
check "replica name from the kernel command line" grep -q " name=$name " <<<"$hello"
check "injected deployment.toml intact" grep -q " deployment=$(zz_sha256 "$work/deployment.toml") " <<<"$hello"
check "injected replica.key intact" grep -q " key=$(zz_sha256 "$work/replica.key") " <<<"$hello"
check "no DNS in the guest" grep -q " dns=no " <<<"$hello"
check "only the on-link /24 route" grep -qE ' routes=10\.0\.2\.0/24 dev eth0 [^;]*;$' <<<"$hello"
check "boot marker on the serial log" grep -qF "$ZZ_BOOT_MARKER" "$work/vm/serial.log"

# Suspend / resume: no ticks while paused, ticks again after.
await_event "$(event_count)" " conn=$conn line tick " 10 >/dev/null
timed suspend zz_virsh suspend "$name"
check "suspended domain is paused" test "$(domstate)" = paused
paused_at=$(event_count)
sleep 1
# One tick may have been in flight when the vCPU stopped.
check "no progress while paused" test $(($(event_count) - paused_at)) -le 1
mark=$(event_count)
timed resume zz_virsh resume "$name"
check "resumed domain is running" test "$(domstate)" = running
await_event "$mark" " conn=$conn line tick " 10 >/dev/null
pass "agent ticks again after resume"

# Managed save (hibernate) and restore. slirp's host sockets die with the
# qemu process, so the restored agent must dial in again.
timed managedsave zz_virsh managedsave "$name"
check "saved domain is shut off with a managed save image" \
    grep -qE '^Managed save: +yes' <<<"$(zz_virsh dominfo "$name")"
mark=$(event_count)
t0=$(zz_now_ms)
timed restore zz_virsh start "$name"
check "restored domain is running" test "$(domstate)" = running
again=$(await_event "$mark" ' line hello ' 30)
timing[restore_to_reconnect]=$((${again%% *} - t0))
check "same guest after restore (name, no reboot)" grep -q " name=$name " <<<"$again"
conn=$(sed -E 's/.* conn=([0-9]+) .*/\1/' <<<"$again")

# The agent exits -> /init powers off -> on_poweroff=destroy.
t0=$(zz_now_ms)
: >"$work/exit-request"
deadline=$(($(zz_now_ms) + 30000))
while [[ "$(domstate)" != "shut off" ]] && (($(zz_now_ms) < deadline)); do sleep 0.05; done
timing[agent_exit_to_shutoff]=$(($(zz_now_ms) - t0))
check "VM powers off when the agent exits" test "$(domstate)" = "shut off"
check "serial log records the agent's exit status" \
    grep -qF "zz-guest: agent exited with status 3; powering off" "$work/vm/serial.log"

resolved=$(grep -o -m 1 "<domain type='[a-z]*'" "$work/vm/domain.xml" | cut -d"'" -f2)
echo "timings (ms, domain type $resolved, $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg)):"
for key in boot_to_connect suspend resume managedsave restore restore_to_reconnect agent_exit_to_shutoff; do
    printf '  %-22s %6s\n' "$key" "${timing[$key]}"
done
