#!/usr/bin/env bash
# Runs every fuzz target of a fuzz crate (default: this one, p2pmix-mix; FUZZ_DIR picks another)
# for SECONDS each (default 60) and prints, per target, the number of executions that ran clean. Installs cargo-fuzz if it is missing. cargo fuzz needs
# nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
# Usage: mix/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "${FUZZ_DIR:-$(dirname "$0")}"
seconds="${1:-60}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  # Every [[bin]] of the fuzz crate.
  mapfile -t targets < <(awk '/^\[\[bin\]\]/ { b = 1; next } b && /^name = / { gsub(/"/, "", $3); print $3; b = 0 }' Cargo.toml)
fi
export RUSTC_BOOTSTRAP=1
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log="$(mktemp)"
  if cargo fuzz run --release "$t" "corpus/$t" -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    echo "$t: ${runs:-?} executions in ${seconds}s, no crash"
  else
    echo "$t: FAILED (log: $log)"
    tail -30 "$log"
    status=1
  fi
done
exit $status
