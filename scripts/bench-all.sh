#!/usr/bin/env bash
# The whole benchmark matrix, written to bench-results/ under stable file
# names, then `zz bench report` (results.md, throughput-latency.png,
# recovery.png). The full run takes about an hour on 2 cores: run it on an
# otherwise idle machine, since every figure is CPU-bound.
#
#   scripts/bench-all.sh            # full matrix into bench-results/
#   QUICK=1 scripts/bench-all.sh    # a few seconds per run, into target/bench-quick/
#
# Environment:
#   QUICK=1       short runs, small states, few incidents (checks the script
#                 and the binaries, not the numbers)
#   OUT=DIR       where results go (default bench-results, or target/bench-quick
#                 with QUICK=1)
#   ONLY=REGEX    run only the runs whose result file name matches (the report
#                 still covers every file in OUT)
#   BACKENDS=...  recovery backends, space-separated (default "process";
#                 "libvirt" builds with --features zz/libvirt)
#   DURATION, WARMUP  measured and warm-up seconds per throughput run
#
# A failed run is reported and the matrix goes on; the script exits non-zero
# at the end if any run failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

quick="${QUICK:-}"
backends="${BACKENDS:-process}"
if [ -n "$quick" ]; then
  out="${OUT:-target/bench-quick}"
  duration="${DURATION:-3}" warmup="${WARMUP:-1}"
  clients_f1=(16 256) state_mbs=(1 10) incidents=3 rounds=3
else
  out="${OUT:-bench-results}"
  duration="${DURATION:-10}" warmup="${WARMUP:-2}"
  clients_f1=(16 64 256 1024) state_mbs=(10 100 1000) incidents=20 rounds=20
fi
mkdir -p "$out"

features=()
case " $backends " in *" libvirt "*) features=(--features zz/libvirt) ;; esac
echo "== building release binaries ${features[*]}"
cargo build --release --bins --workspace "${features[@]}"
zz="${CARGO_TARGET_DIR:-$root/target}/release/zz"

failed=()
# run NAME ARGS...: one `zz` run writing $out/NAME.json, skipped unless it
# matches $ONLY; its output also goes to $out/logs/NAME.log.
run() {
  local name="$1"
  shift
  if [ -n "${ONLY:-}" ] && ! [[ "$name" =~ $ONLY ]]; then
    return 0
  fi
  mkdir -p "$out/logs"
  echo "== $name: zz $*"
  local start=$SECONDS
  # A failed run must not leave an older result in the report.
  rm -f "$out/$name.json"
  if "$zz" "$@" --json "$out/$name.json" 2>&1 | tee "$out/logs/$name.log"; then
    echo "   ($((SECONDS - start)) s)"
  else
    echo "!! $name failed (log: $out/logs/$name.log)"
    failed+=("$name")
  fi
}

load=(--duration "$duration" --warmup "$warmup")

# Throughput vs latency at f=1: the points of each curve are client counts.
for mode in unreplicated zz full; do
  for c in "${clients_f1[@]}"; do
    run "$mode-f1-c$c" bench --mode "$mode" --f 1 --clients "$c" "${load[@]}"
  done
done
# f=2: more agreement nodes and replicas at the same load.
for mode in zz full; do
  run "$mode-f2-c256" bench --mode "$mode" --f 2 --clients 256 "${load[@]}"
done
# Four apps sharing the machine (aggregate throughput), at 256 and at 1024
# clients per app; then at 1024 per app with the execution replicas on the
# last CPU and the agreement nodes and client on the others (ZZ's layout:
# the shared execution host apart from the agreement cluster).
for mode in zz full; do
  run "$mode-f1-apps4" bench --mode "$mode" --f 1 --apps 4 --clients 1024 "${load[@]}"
  run "$mode-f1-apps4-c4096" bench --mode "$mode" --f 1 --apps 4 --clients 4096 "${load[@]}"
done
cpus="$(nproc)"
if [ "$cpus" -ge 2 ]; then
  for mode in zz full; do
    run "$mode-f1-apps4-c4096-exec-cpu" bench --mode "$mode" --f 1 --apps 4 --clients 4096 \
      --exec-cpus "$((cpus - 1))" "${load[@]}"
  done
fi

# Recovery: fault → answer per standby tier and state size, plus the
# full-transfer baseline.
for backend in $backends; do
  prefix=recovery
  [ "$backend" = process ] || prefix="recovery-$backend"
  for mb in "${state_mbs[@]}"; do
    for standby in paused hibernated cold; do
      run "$prefix-$standby-${mb}mb" bench recovery --backend "$backend" --standby "$standby" \
        --state-mb "$mb" --incidents "$incidents"
    done
    run "$prefix-baseline-${mb}mb" bench recovery --backend "$backend" --baseline \
      --state-mb "$mb" --incidents "$incidents"
  done
done

run view-change-f1 bench view-change --rounds "$rounds"

echo "== report"
"$zz" bench report --results "$out" --out "$out"

if [ ${#failed[@]} -gt 0 ]; then
  echo "!! ${#failed[@]} run(s) failed: ${failed[*]}"
  exit 1
fi
echo "== all runs done: $out"
