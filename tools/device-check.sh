#!/usr/bin/env bash
# tools/device-check.sh - the one prepared run on a GPU machine
# (see README.md, "GPU verification"). From the repository root:
#   1. unpack Criterion from carried .deps/debs when it is not installed,
#      configure a Release build for sm_90 and build with every core;
#   2. run every test with XENT_REQUIRE_GPU=1 (no GPU is a failure);
#   3. run the GPU test binary under compute-sanitizer memcheck, racecheck,
#      initcheck and synccheck (a reduced case list, XENT_TEST_QUICK=1);
#   4. run the benchmark suite (xent bench --suite --json);
#   5. run bench/compare_torch.py (PyTorch eager and torch.compile, same
#      shapes, same process and card);
#   6. write everything under $OUT (results.json, logs) and print a table.
# Each step has a time limit (seconds; XENT_T_TESTS, XENT_T_SANITIZER per
# tool, XENT_T_BENCH, XENT_T_PEERS) so the whole run fits one device call.
# Results go to bench/results/ and bench/RESULTS.md afterwards:
#   python3 bench/results.py markdown --gpu bench/results/<file>.json --cpu bench/results/cpu-*.json > bench/RESULTS.md
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/device-out}
mkdir -p "$OUT"
build=build/device
jobs=$(nproc 2>/dev/null || echo 8)
step() { printf '\n== %s\n' "$*"; }

step "1. build"
extra=()
if ! dpkg -s libcriterion-dev >/dev/null 2>&1 && [ -d .deps/debs ]; then
  mkdir -p .deps/root
  for f in .deps/debs/*.deb; do dpkg -x "$f" .deps/root; done
  export LD_LIBRARY_PATH=$PWD/.deps/root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  extra+=(-DCMAKE_PREFIX_PATH=$PWD/.deps/root/usr
          -DCMAKE_LIBRARY_PATH=$PWD/.deps/root/usr/lib/x86_64-linux-gnu
          -DCMAKE_INCLUDE_PATH=$PWD/.deps/root/usr/include)
fi
gen=(); command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES=90 "${extra[@]}" >"$OUT/configure.log" 2>&1 \
  || { tail -30 "$OUT/configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" >"$OUT/build.log" 2>&1 \
  || { tail -40 "$OUT/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
  | tee "$OUT/gpu.txt"

step "2. tests (XENT_REQUIRE_GPU=1)"
XENT_REQUIRE_GPU=1 timeout "${XENT_T_TESTS:-300}" ctest --test-dir "$build" -V --timeout 280 >"$OUT/tests.log" 2>&1
echo "ctest exit: $?"
grep -E 'Synthesis:|tests passed|did not run|\(Failed\)|\(Skipped\)' "$OUT/tests.log" | sed -E 's/^[0-9]+: //'

step "3. compute-sanitizer"
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
: >"$OUT/sanitizer.txt"
if [ -n "$san" ]; then
  for tool in memcheck racecheck initcheck synccheck; do
    XENT_REQUIRE_GPU=1 XENT_TEST_QUICK=1 timeout "${XENT_T_SANITIZER:-120}" \
      "$san" --tool "$tool" --error-exitcode 99 \
      "$build/tests/test_gpu" --verbose=0 -j1 >"$OUT/sanitizer-$tool.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then verdict=clean; elif [ $rc -eq 99 ]; then verdict=errors; else verdict="exit $rc"; fi
    echo "$tool $verdict" | tee -a "$OUT/sanitizer.txt"
    tail -3 "$OUT/sanitizer-$tool.log"
  done
else
  echo "compute-sanitizer not found" | tee "$OUT/sanitizer.txt"
fi

step "4. benchmark"
timeout "${XENT_T_BENCH:-240}" "$build/xent" bench --suite --json >"$OUT/bench.json" 2>"$OUT/bench.log"
echo "bench exit: $?"; tail -5 "$OUT/bench.log"

step "5. PyTorch peers"
PYTHONUNBUFFERED=1 timeout "${XENT_T_PEERS:-240}" python3 bench/compare_torch.py --shapes-from "$OUT/bench.json" --json "$OUT/peers.json" \
  >"$OUT/peers.log" 2>&1
echo "compare_torch exit: $?"; tail -5 "$OUT/peers.log"

step "6. results"
python3 bench/results.py merge --out "$OUT/results.json" --gpu "$OUT/gpu.txt" \
  --tests "$OUT/tests.log" --sanitizer "$OUT/sanitizer.txt" \
  --bench "$OUT/bench.json" --peers "$OUT/peers.json" \
  --commit "${XENT_COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
python3 bench/results.py table "$OUT/results.json"
