#!/usr/bin/env bash
# Configure, build and run the whole test suite (CPU tests always; GPU tests
# skip without a device unless XENT_REQUIRE_GPU=1). Prints ctest's summary,
# then one closing line that counts the Criterion tests that really ran:
#   tests: P passed, F failed, S skipped
# Environment: XENT_BUILD_DIR (default build/test), XENT_CMAKE_ARGS.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${XENT_BUILD_DIR:-build/test}
jobs=$(nproc 2>/dev/null || echo 2)

# shellcheck disable=SC2086
gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DXENT_TESTS_REQUIRED=ON ${XENT_CMAKE_ARGS:-} \
  || { echo "tests: 0 passed, 1 failed (configure)"; exit 1; }
cmake --build "$build" -j"$jobs" \
  || { echo "tests: 0 passed, 1 failed (build)"; exit 1; }

log=$(mktemp)
trap 'rm -f "$log"' EXIT
ctest --test-dir "$build" -V --timeout 1500 >"$log" 2>&1
rc=$?
# ctest -V prefixes each test's output with "N: "; show the summaries only.
grep -E 'Synthesis:|skipping|^ *[0-9]+/[0-9]+ Test|tests passed|did not run|\((Skipped|Failed|Not Run|Timeout)\)' "$log" \
  | sed -E 's/^[0-9]+: //'
if [ $rc -ne 0 ]; then
  echo "---- failing output ----"
  grep -vE '^[0-9]+: \[(----|====)\]' "$log" | grep -E 'FAIL|fail|Assert|assert|error|Error|crash|CRASH|SIG' | head -200
fi
awk '
  /Synthesis:/ {
    for (i = 1; i <= NF; i++) {
      if ($i == "Passing:") p += $(i + 1)
      if ($i == "Failing:") f += $(i + 1)
      if ($i == "Crashing:") f += $(i + 1)
    }
  }
  /skipping [0-9]+ tests/ {
    for (i = 1; i <= NF; i++) if ($i == "skipping") s += $(i + 1)
  }
  END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }
' "$log"
exit $rc
