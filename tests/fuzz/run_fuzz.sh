#!/bin/sh
# run_fuzz.sh - builds the libFuzzer harness for the .npy parser and runs it.
#
# Usage: tests/fuzz/run_fuzz.sh [seconds]   (default 60)
#
# The seed corpus (tests/fuzz/corpus) is copied to a temporary directory, so
# the checked-in seeds never change. Exits 0 when the run ends without a
# finding; otherwise exits non-zero and keeps the temporary directory, whose
# crash-*/leak-*/timeout-* files reproduce the problem with
#   <dir>/fuzz_npy <dir>/crash-...
# Environment: CC (default clang), FUZZ_FLAGS (extra libFuzzer options).
set -eu

secs=${1:-60}
case $secs in
    ''|*[!0-9]*) echo "run_fuzz.sh: seconds must be a positive integer" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/xent_fuzz_npy.XXXXXX")
keep=0
cleanup() { [ "$keep" = 1 ] || rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

cp -R "$root/tests/fuzz/corpus" "$work/corpus"

# Tokens of the header grammar help the mutator reach deep states quickly.
cat > "$work/npy.dict" <<'DICT'
"\x93NUMPY\x01\x00"
"\x93NUMPY\x02\x00"
"\x93NUMPY\x03\x00"
"'descr'"
"'fortran_order'"
"'shape'"
"True"
"False"
"'<f4'"
"'<f2'"
"'<f8'"
"'<i4'"
"'<i8'"
"'<u2'"
"'|V2'"
"'>f4'"
"'|O'"
"(0,)"
"()"
", "
": "
"L,"
"281474976710656"
"9223372036854775808"
DICT

# -fno-sanitize-recover: an undefined-behaviour report must stop the run.
${CC:-clang} -g -O1 -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=all -I"$root/host" \
    "$root/host/npy.c" "$root/tests/fuzz/fuzz_npy.c" -o "$work/fuzz_npy"

echo "run_fuzz.sh: fuzzing for ${secs}s in $work" >&2
rc=0
# shellcheck disable=SC2086
"$work/fuzz_npy" -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -dict="$work/npy.dict" \
    -artifact_prefix="$work/" ${FUZZ_FLAGS:-} "$work/corpus" || rc=$?

if [ "$rc" -ne 0 ]; then
    keep=1
    echo "run_fuzz.sh: fuzzer exited with status $rc; artifacts kept in $work:" >&2
    for f in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-*; do
        [ -e "$f" ] && echo "  $f" >&2
    done
    exit "$rc"
fi
echo "run_fuzz.sh: no findings in ${secs}s" >&2
