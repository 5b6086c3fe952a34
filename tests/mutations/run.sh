#!/usr/bin/env bash
# Breaks the Raft core on purpose, one mutation at a time, and checks that the tests notice.
#
#   tests/mutations/run.sh [tests/mutations/NN-name.patch ...]    (default: every patch here)
#
# For each patch: `git apply` it, run the fast tests (the library's unit tests,
# tests/raft_core.rs, tests/raft_paper.rs) and the simulator at its CI seed budget, record
# which tests failed and the simulator's first failing seed, then `git apply -R`. Exits
# non-zero if any mutation survives every test. Builds with cargo as usual, so
# CARGO_TARGET_DIR is honoured. The first line of each patch says what it breaks.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"

patches=("$@")
if [ ${#patches[@]} -eq 0 ]; then
  patches=(tests/mutations/*.patch)
fi
logs=$(mktemp -d -t keel-mutations.XXXXXX)
# A mutation makes proptest record its failing cases; keep the files as they were.
regressions=(tests/*.proptest-regressions)
for f in "${regressions[@]}"; do
  [ -e "$f" ] && cp "$f" "$logs/"
done
applied=""
restore() {
  if [ -n "$applied" ]; then
    git apply -R "$applied"
    applied=""
  fi
  for f in "${regressions[@]}"; do
    if [ -e "$logs/$(basename "$f")" ]; then
      cp "$logs/$(basename "$f")" "$f"
    fi
  done
}
trap restore EXIT
trap 'restore; exit 130' INT TERM

survivors=0
for patch in "${patches[@]}"; do
  name=$(basename "$patch" .patch)
  git apply --check "$patch"
  git apply "$patch"
  applied=$patch
  echo "== $name: $(head -n 1 "$patch")"

  fast="none"
  if ! cargo test --release --no-fail-fast --lib --test raft_core --test raft_paper >"$logs/$name.fast" 2>&1; then
    fast=$(grep -oE '^test [A-Za-z0-9_:]+ \.\.\. FAILED' "$logs/$name.fast" | awk '{print $2}' | paste -sd, - || true)
    fast=${fast:-"(did not build or run; see $logs/$name.fast)"}
  fi

  sim="not caught"
  started=$(date +%s)
  if ! cargo test --release --test raft_sim >"$logs/$name.sim" 2>&1; then
    seed=$(grep -oE 'SIMULATION FAILED at seed [0-9]+' "$logs/$name.sim" | awk '{print $5}' | sort -n | head -n 1 || true)
    if [ -n "$seed" ]; then
      why=$(grep -oE "SIMULATION FAILED at seed $seed: .*" "$logs/$name.sim" | head -n 1 | cut -d: -f2- | cut -c2-90 || true)
      sim="first failing seed $seed ($why)"
    else
      sim="failed without a seed report; see $logs/$name.sim"
    fi
  fi
  elapsed=$(( $(date +%s) - started ))
  restore

  if [ "$fast" = "none" ] && [ "$sim" = "not caught" ]; then
    verdict="SURVIVED"
    survivors=$((survivors + 1))
  else
    verdict="caught"
  fi
  echo "   $verdict"
  echo "   fast tests failing: $fast"
  echo "   simulator (${elapsed}s): $sim"
done

echo "logs: $logs"
if [ "$survivors" -gt 0 ]; then
  echo "$survivors mutation(s) survived"
  exit 1
fi
echo "every mutation was caught"
