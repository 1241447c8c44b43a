#!/usr/bin/env bash
# Interleaved pairs: `zz bench --mode A` then `--mode B`, PAIRS times, each
# pair with its own seed, then every ratio A/B and their median. On a shared
# host single runs drift by 10-20%; a pair's two runs are seconds apart, so
# its ratio drifts far less than two runs taken an hour apart.
#
#   scripts/bench-pairs.sh                              # zz/full, 4 apps, 4096 clients, 5 pairs
#   A=zz B=unreplicated APPS=1 CLIENTS=1024 scripts/bench-pairs.sh
#   PAIRS=3 scripts/bench-pairs.sh --exec-cpus 1        # extra arguments go to both runs
#
#   A=zz B=zz ZZ_A=old/zz ZZ_B=new/zz scripts/bench-pairs.sh   # two builds, one mode
#
# Environment: A, B (modes; default zz, full), APPS (4), CLIENTS (4096),
# PAIRS (5), DURATION (8), WARMUP (2), SEED (first pair's seed, default 1),
# OUT (where each run's JSON goes; default a temporary directory), ZZ_A and
# ZZ_B (the `zz` binary of each side, each with its `zz-agent` beside it;
# default both the workspace's release build, built first).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
a="${A:-zz}" b="${B:-full}"
apps="${APPS:-4}" clients="${CLIENTS:-4096}" pairs="${PAIRS:-5}"
duration="${DURATION:-8}" warmup="${WARMUP:-2}" seed="${SEED:-1}"
out="${OUT:-$(mktemp -d -t zz-pairs.XXXXXX)}"
mkdir -p "$out"

if [ -z "${ZZ_A:-}" ] || [ -z "${ZZ_B:-}" ]; then
  cargo build --release --bins --workspace --manifest-path "$root/Cargo.toml"
fi
built="${CARGO_TARGET_DIR:-$root/target}/release/zz"
zz_a="${ZZ_A:-$built}" zz_b="${ZZ_B:-$built}"

# ops SIDE MODE SEED: one run's throughput (ops/s), its output in $out.
ops() {
  local zz="$zz_a"
  [ "$1" = b ] && zz="$zz_b"
  local json="$out/$1-$2-$3.json"
  "$zz" bench --mode "$2" --apps "$apps" --clients "$clients" --duration "$duration" \
    --warmup "$warmup" --seed "$3" --json "$json" "${extra[@]}" >"$out/$1-$2-$3.log" 2>&1 ||
    { echo "!! $zz bench --mode $2 failed: $out/$1-$2-$3.log" >&2; exit 1; }
  sed -n 's/^ *"throughput_ops": *\([0-9.]*\).*/\1/p' "$json"
}

# lat SIDE MODE SEED: "p50 X ms, p99 Y ms" of a finished run.
lat() {
  local json="$out/$1-$2-$3.json"
  printf 'p50 %s ms, p99 %s ms' "$(sed -n 's/^ *"p50_ms": *\([0-9.]*\).*/\1/p' "$json")" \
    "$(sed -n 's/^ *"p99_ms": *\([0-9.]*\).*/\1/p' "$json")"
}

extra=("$@")
echo "pairs of $a then $b: $apps app(s), $clients clients, ${duration} s measured, ${extra[*]:-no extra arguments}; results in $out"
ratios=()
for ((i = 0; i < pairs; i++)); do
  s=$((seed + i))
  x="$(ops a "$a" "$s")"
  y="$(ops b "$b" "$s")"
  r="$(awk -v x="$x" -v y="$y" 'BEGIN { printf "%.3f", x / y }')"
  ratios+=("$r")
  printf 'seed %d: A %s %.0f ops/s (%s), B %s %.0f ops/s (%s), ratio %s\n' \
    "$s" "$a" "$x" "$(lat a "$a" "$s")" "$b" "$y" "$(lat b "$b" "$s")" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v a="$a" -v b="$b" '
  { r[NR] = $1 }
  END {
    m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
    printf "%s/%s over %d pairs: median %.2f, min %.2f, max %.2f\n", a, b, NR, m, r[1], r[NR]
  }'
