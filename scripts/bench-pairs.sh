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
# Environment: A, B (modes; default zz, full), APPS (4), CLIENTS (4096),
# PAIRS (5), DURATION (8), WARMUP (2), SEED (first pair's seed, default 1),
# OUT (where each run's JSON goes; default a temporary directory).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
a="${A:-zz}" b="${B:-full}"
apps="${APPS:-4}" clients="${CLIENTS:-4096}" pairs="${PAIRS:-5}"
duration="${DURATION:-8}" warmup="${WARMUP:-2}" seed="${SEED:-1}"
out="${OUT:-$(mktemp -d -t zz-pairs.XXXXXX)}"
mkdir -p "$out"

cargo build --release --bins --workspace --manifest-path "$root/Cargo.toml"
zz="${CARGO_TARGET_DIR:-$root/target}/release/zz"

# ops MODE SEED: one run's throughput (ops/s), its output in $out.
ops() {
  local json="$out/$1-$2.json"
  "$zz" bench --mode "$1" --apps "$apps" --clients "$clients" --duration "$duration" \
    --warmup "$warmup" --seed "$2" --json "$json" "${extra[@]}" >"$out/$1-$2.log" 2>&1 ||
    { echo "!! zz bench --mode $1 failed: $out/$1-$2.log" >&2; exit 1; }
  sed -n 's/^ *"throughput_ops": *\([0-9.]*\).*/\1/p' "$json"
}

extra=("$@")
echo "pairs of $a then $b: $apps app(s), $clients clients, ${duration} s measured, ${extra[*]:-no extra arguments}; results in $out"
ratios=()
for ((i = 0; i < pairs; i++)); do
  s=$((seed + i))
  x="$(ops "$a" "$s")"
  y="$(ops "$b" "$s")"
  r="$(awk -v x="$x" -v y="$y" 'BEGIN { printf "%.3f", x / y }')"
  ratios+=("$r")
  printf 'seed %d: %s %.0f ops/s, %s %.0f ops/s, ratio %s\n' "$s" "$a" "$x" "$b" "$y" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v a="$a" -v b="$b" '
  { r[NR] = $1 }
  END {
    m = (NR % 2) ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
    printf "%s/%s over %d pairs: median %.2f, min %.2f, max %.2f\n", a, b, NR, m, r[1], r[NR]
  }'
