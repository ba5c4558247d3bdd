#!/usr/bin/env bash
# coverage.sh — how much of the CPU backend the conformance table reaches:
#   1. builds the library (CPU backend only) and test_conformance with gcc --coverage -O0 in
#      build-cov/ (BUILD overrides);
#   2. runs test_conformance with NEATML_TEST_BACKENDS=cpu (its log: build-cov/conformance.log);
#   3. prints, per file of src/backends/cpu/, the line coverage (gcov), then every function
#      of that folder that was never entered. A hot loop compiled for several x86-64 levels
#      (CPU_CLONES: .avx512f, .avx2, .default) counts as entered when one of its versions
#      ran: the machine picks one. The CUDA kernels are mapped to table rows in
#      docs/TESTING.md instead (gcov cannot see a GPU).
# Exit status: non-zero when the build fails or a conformance case fails.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-cov}
JOBS=${JOBS:-$(nproc)}

mkdir -p "$BUILD"
if ! { cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DNEATML_CUDA=OFF \
         -DCMAKE_C_FLAGS="--coverage -O0" -DCMAKE_CXX_FLAGS="--coverage -O0" \
         -DCMAKE_EXE_LINKER_FLAGS=--coverage -DCMAKE_SHARED_LINKER_FLAGS=--coverage \
         >"$BUILD/configure.log" 2>&1 &&
       cmake --build "$BUILD" -j"$JOBS" --target test_conformance >"$BUILD/build.log" 2>&1; }; then
  echo "coverage: build failed (see $BUILD/configure.log, $BUILD/build.log)"
  exit 1
fi

obj="$BUILD/CMakeFiles/neatml.dir/src/backends/cpu"
find "$BUILD" -name '*.gcda' -delete
status=0
NEATML_TEST_BACKENDS=cpu "$BUILD/test_conformance" >"$BUILD/conformance.log" 2>&1 || status=$?
echo "test_conformance (cpu): $(tail -n1 "$BUILD/conformance.log")"

# gcov -n: no .gcov files, only the summaries; -f: one per function as well.
report=$(cd "$obj" && gcov -n -f ./*.c.gcda 2>/dev/null)

echo
printf '%-36s %8s %7s\n' "file" "lines" "covered"
awk '
  /^File .*src\/backends\/cpu\// { f = $2; gsub(/\x27/, "", f); sub(/.*src\/backends\/cpu\//, "", f); file = f; next }
  /^File / { file = ""; next }
  /^Lines executed:/ && file != "" {
    split($2, a, ":"); pct = a[2]; sub(/%/, "", pct); n = $4
    printf "src/backends/cpu/%-19s %8d %6.1f%%\n", file, n, pct
    total += n; hit += n * pct / 100; file = ""
  }
  END { printf "%-36s %8d %6.1f%%\n", "total", total, total ? 100 * hit / total : 0 }
' <<<"$report"

echo
echo "functions of src/backends/cpu/ never entered:"
# Function summaries come before the file summaries; clones are merged by their base name.
never=$(awk '
  /^Function / { fn = $2; gsub(/\x27/, "", fn); sub(/\.(avx512f|avx2|default|resolver)$/, "", fn); next }
  /^Lines executed:/ && fn != "" { split($2, a, ":"); pct = a[2]; sub(/%/, "", pct)
                                   if (!(fn in seen)) seen[fn] = 0
                                   if (pct + 0 > 0) seen[fn] = 1
                                   fn = ""; next }
  /^File / { fn = "" }
  END { for (f in seen) if (!seen[f]) print "  " f }
' <<<"$report" | sort)
echo "${never:-  (none)}"
exit $status
