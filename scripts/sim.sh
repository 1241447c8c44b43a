#!/usr/bin/env bash
# Whole-system deterministic simulation (sim/): every role's real logic in
# virtual time, faults drawn from each seed, oracles checked on every run.
#   scripts/sim.sh --seeds N [--f 1|2] [--seed S] [--trace] [--jobs J] [--shrink]
# A failing seed is printed with the command that replays it with a trace.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --quiet --release -p zz-sim -- "$@"
