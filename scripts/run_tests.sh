#!/usr/bin/env bash
# The whole test run behind `make test`:
#   1. the release build (with the CUDA backend when nvcc exists) and every tests/test_*.c
#      binary on every backend that opens here (the others are reported as skipped), and
#      test_dtype once more with the CPU's bf16 GEMMs on oneDNN's bf16 kernels;
#   2. a second build of the library and tests with -fsanitize=address,undefined
#      (-fno-sanitize-recover=all), run the same way with leak detection on and the pool's
#      debug mode: any sanitizer report, leak included, fails it;
#   3. a third build with -fsanitize=thread (clang), run the same way;
#   4. the libFuzzer harness tests/fuzz_record.c (clang, ASan+UBSan), a fixed number of
#      runs from a fixed seed (scripts/fuzz.sh runs it longer);
#   5. the collectives across 2 processes: test_collectives under mpirun -np 2 (skipped,
#      and counted so, when mpirun is missing);
#   6. the CPU backend built against oneDNN 3 (PyPI's wheels, scripts/get_onednn.sh): the
#      tests that run oneDNN (a skip when PyPI cannot be reached);
#   7. the OCaml bindings' tests.
# docs/RELIABILITY.md says what each sanitizer run covers and why its options are set.
# Each binary ends with "<suite>: N passed, M failed, K skipped"; this script adds them up
# and ends with the plain line "N passed, M failed, K skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ASAN_BUILD=${ASAN_BUILD:-build-asan}
TSAN_BUILD=${TSAN_BUILD:-build-tsan}
FUZZ_BUILD=${FUZZ_BUILD:-build-fuzz}
FUZZ_RUNS=${FUZZ_RUNS:-300000} # about a minute on two cores (5,000 inputs a second)
# The sanitizer runtimes of clang's TSan and libFuzzer builds, and LLVM's OpenMP (libomp,
# with its TSan tool Archer): clang-14, libclang-rt-14-dev, libomp-14-dev.
CLANG=${CLANG:-clang-14}
LLVM_LIB=$(dirname "$(readlink -f "$(command -v "$CLANG")")")/../lib
JOBS=${JOBS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}
passed=0 failed=0 skipped=0

. scripts/count.sh # (the working directory is the root)

run_suite() { # run_suite <label> <build dir>
  local src bin out rc
  # One binary per tests/test_*.c: a binary left in the build folder by a test file that
  # no longer exists is not run, and one that was not built counts as a failure.
  for src in tests/test_*.c; do
    bin="$2/$(basename "$src" .c)"
    if [ ! -x "$bin" ]; then
      echo "$1 $(basename "$bin"): not built"
      failed=$((failed + 1))
      continue
    fi
    out=$("$bin" 2>&1); rc=$?
    printf '%s\n' "$out" > "$2/$(basename "$bin").log"
    count "$1 $(basename "$bin")" "$out"
    if [ $rc -ne 0 ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$(printf '%s\n' "$out" | tail -n1)"; then
      echo "$1 $(basename "$bin"): exit status $rc (see $2/$(basename "$bin").log)"
      printf '%s\n' "$out" | tail -n 20
      failed=$((failed + 1))
    elif [ $rc -ne 0 ]; then
      printf '%s\n' "$out" | grep -E '^FAIL' | head -n 20
    fi
  done
}

build() { # build <dir> <cmake args...>
  local dir=$1; shift
  if ! { cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1 &&
         cmake --build "$dir" -j"$JOBS" >"$dir.build.log" 2>&1; }; then
    echo "build of $dir failed:"; tail -n 40 "$dir.configure.log" "$dir.build.log"
    return 1
  fi
}

mkdir -p "$BUILD" "$ASAN_BUILD" "$TSAN_BUILD" "$FUZZ_BUILD"
if build "$BUILD" -DCMAKE_BUILD_TYPE=Release; then
  run_suite release "$BUILD"
  # bf16 GEMMs on oneDNN's bf16 kernels (on by default only where the CPU has bf16
  # instructions; forced here, where oneDNN may emulate them): test_dtype's bf16 matmul and
  # linear rows take that path on the CPU.
  out=$(NEATML_CPU_BF16=2 NEATML_TEST_BACKENDS=cpu "$BUILD/test_dtype" 2>&1)
  printf '%s\n' "$out" > "$BUILD/test_dtype.cpu_bf16.log"
  count "release test_dtype (cpu, NEATML_CPU_BF16=2)" "$out"
else
  failed=$((failed + 1))
fi

if build "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEATML_SANITIZE=ON -DNEATML_CUDA=OFF; then
  # Leaks are reported (tests/lsan.supp may name third-party frames only); the pool's
  # debug mode gives every tensor a block of its exact size and caches none, so that ASan
  # sees an access past a tensor's end and a use after its destruction.
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
  LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} NEATML_DEBUG_POOL=1 \
  run_suite asan "$ASAN_BUILD"
  out=$(ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
        LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0} \
        UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} NEATML_DEBUG_POOL=1 \
        NEATML_CPU_BF16=2 NEATML_TEST_BACKENDS=cpu "$ASAN_BUILD/test_dtype" 2>&1)
  printf '%s\n' "$out" > "$ASAN_BUILD/test_dtype.cpu_bf16.log"
  count "asan test_dtype (cpu, NEATML_CPU_BF16=2)" "$out"
else
  failed=$((failed + 1))
fi

# ThreadSanitizer, with clang (src/backends/cpu/cpu.h turns the target_clones loops off
# under the sanitizers: ld.so runs their ifunc resolvers before TSan's runtime is set up,
# and the process would die at load). Every binary runs, since every one has
# at least the application thread and the device's worker thread (test_threads has four
# application threads on one device) plus the OpenMP team. clang builds the OpenMP loops
# against libomp, whose synchronization TSan cannot see by itself; Archer, libomp's TSan
# tool, tells it, so no libomp race needs a suppression and the loops keep their threads.
# oneDNN runs on its own libgomp, which is not instrumented:
# ignore_noninstrumented_modules drops what TSan's interceptors see from it.
if CC=$CLANG build "$TSAN_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEATML_SANITIZE_THREAD=ON \
     -DNEATML_CUDA=OFF; then
  OMP_TOOL_LIBRARIES=$LLVM_LIB/libarcher.so \
  TSAN_OPTIONS=${TSAN_OPTIONS:-ignore_noninstrumented_modules=1:halt_on_error=0} \
  run_suite tsan "$TSAN_BUILD"
else
  failed=$((failed + 1))
fi

# libFuzzer over op recording: FUZZ_RUNS inputs from a fixed seed, starting from the
# corpus tests/fuzz_corpus/ (read only: what the run finds goes to a scratch folder; it
# holds the reproducers of every bug found, so each is replayed first). Any report is a
# crash. One closing line: the runs as passed, or one failure for the crash. One OpenMP thread, as scripts/fuzz.sh explains.
if CC=$CLANG build "$FUZZ_BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEATML_FUZZ=ON \
     -DNEATML_TESTS=OFF -DNEATML_CUDA=OFF; then
  rm -rf "$FUZZ_BUILD/corpus-run" && mkdir -p "$FUZZ_BUILD/corpus-run"
  out=$(NEATML_NUM_THREADS=1 NEATML_DEBUG_POOL=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
        LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0} \
        "$FUZZ_BUILD/fuzz_record" -runs="$FUZZ_RUNS" -seed=1 -max_len=512 -len_control=0 \
        -timeout=10 -artifact_prefix="$FUZZ_BUILD/" "$FUZZ_BUILD/corpus-run" tests/fuzz_corpus 2>&1)
  rc=$?
  printf '%s\n' "$out" > "$FUZZ_BUILD/fuzz_record.log"
  if [ $rc -eq 0 ] && grep -q "^Done $FUZZ_RUNS runs" <<<"$out"; then
    out="fuzz: $FUZZ_RUNS passed, 0 failed"
  else
    printf '%s\n' "$out" | grep -E -A 12 'ERROR|runtime error|^fuzz_record:' | head -n 40
    echo "fuzz: exit status $rc; the input is $FUZZ_BUILD/crash-* (log: $FUZZ_BUILD/fuzz_record.log)"
    out="fuzz: 0 passed, 1 failed"
  fi
  count "fuzz" "$out"
else
  failed=$((failed + 1))
fi

mpi_suite() { # mpi_suite <label> <build dir>: test_collectives on 2 ranks (MPI)
  local bin="$2/test_collectives" id="$2/collectives_id.$$" out rc r
  if ! command -v mpirun >/dev/null; then
    echo "$1 test_collectives (mpirun -np 2): SKIP: mpirun not found (install openmpi-bin)"
    skipped=$((skipped + 1)); return
  fi
  rm -f "$id"
  # root: Open MPI refuses to start without these; a 2-core CI machine: --oversubscribe.
  out=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 NEATML_NUM_THREADS=1 \
        timeout 300 mpirun -np 2 --oversubscribe "$bin" --init-file "$id" 2>&1); rc=$?
  rm -f "$id" "$id.tmp" "$id.spare" "$id.spare.tmp"
  printf '%s\n' "$out" > "$2/test_collectives.mpi.log"
  for r in 0 1; do
    count "$1 test_collectives (mpirun rank $r)" \
      "$(printf '%s\n' "$out" | grep -E "^collectives-rank$r: " | tail -n1)"
  done
  if [ $rc -ne 0 ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$out"; then
    echo "$1 test_collectives under mpirun: exit status $rc (see $2/test_collectives.mpi.log)"
    printf '%s\n' "$out" | tail -n 20; failed=$((failed + 1))
  fi
}
[ -x "$BUILD/test_collectives" ] && mpi_suite release "$BUILD"

# The CPU backend against oneDNN 3 (PyPI's oneDNN 3.2, scripts/get_onednn.sh), the API
# Homebrew's onednn has on macOS: the tests that run oneDNN, so that the v3 code path
# (dnnl_compat.h) keeps building and passing. It needs pip and PyPI (39 MB, kept in
# .deps/onednn3 between runs); without them it is one skip with the reason.
# NEATML_DNNL3=0 leaves it out.
dnnl3_suite() {
  local dir=.deps/onednn3 b=build-dnnl3 t out
  if [ "${NEATML_DNNL3:-1}" = 0 ]; then
    echo "dnnl3: SKIP: NEATML_DNNL3=0"; skipped=$((skipped + 1)); return
  fi
  if [ ! -f "$dir/include/oneapi/dnnl/dnnl.h" ] &&
     ! out=$(bash scripts/get_onednn.sh "$dir" gomp 2>&1); then
    echo "dnnl3: SKIP: oneDNN 3 could not be fetched from PyPI: $(printf '%s\n' "$out" | tail -n1)"
    skipped=$((skipped + 1)); return
  fi
  mkdir -p "$b"
  if ! build "$b" -DCMAKE_BUILD_TYPE=Release -DNEATML_CUDA=OFF -DDNNL_ROOT="$PWD/$dir"; then
    failed=$((failed + 1)); return
  fi
  for t in test_conformance test_dtype test_cmdbuf test_errors_ops; do
    out=$("$b/$t" 2>&1)
    printf '%s\n' "$out" > "$b/$t.log"
    count "dnnl3 $t" "$out"
  done
  out=$(NEATML_CPU_BF16=2 "$b/test_dtype" 2>&1) # the bf16 GEMMs on oneDNN 3's bf16 kernels
  printf '%s\n' "$out" > "$b/test_dtype.cpu_bf16.log"
  count "dnnl3 test_dtype (NEATML_CPU_BF16=2)" "$out"
}
dnnl3_suite

if [ -x ocaml/run_tests.sh ]; then
  out=$(NEATML_BUILD_DIR="$PWD/$BUILD" ocaml/run_tests.sh 2>&1)
  printf '%s\n' "$out" > "$BUILD/ocaml_tests.log"
  count "ocaml" "$out"
fi

echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
