#!/usr/bin/env bash
# Fuzz op recording longer than `make test` does: scripts/fuzz.sh [seconds] (default 600).
# Builds build-fuzz/ (clang, libFuzzer, ASan+UBSan) when needed, then runs
# tests/fuzz_record.c from the corpus tests/fuzz_corpus/ plus build-fuzz/corpus/, where the
# new inputs it finds accumulate between runs. A crash leaves its input in
# build-fuzz/crash-*: replay it with `build-fuzz/fuzz_record FILE`, and keep it in
# tests/fuzz_corpus/ once it is understood (docs/RELIABILITY.md lists the finds).
# Extra arguments after the seconds go to libFuzzer (e.g. -jobs=2, -seed=7).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
CLANG=${CLANG:-clang-14}
bash scripts/install_deps.sh
CC=$CLANG cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNEATML_FUZZ=ON \
  -DNEATML_TESTS=OFF -DNEATML_CUDA=OFF >build-fuzz.configure.log
cmake --build build-fuzz -j"$(nproc)" >build-fuzz.build.log
mkdir -p build-fuzz/corpus
ubsan=halt_on_error=1:print_stacktrace=1
# One OpenMP thread: the ops stay small, and a team's spinning threads would only slow the
# runs down on a shared machine.
NEATML_NUM_THREADS=1 NEATML_DEBUG_POOL=1 UBSAN_OPTIONS=$ubsan \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0} \
exec build-fuzz/fuzz_record -max_total_time="$secs" -max_len=512 -len_control=0 -timeout=10 \
  -artifact_prefix=build-fuzz/ "$@" build-fuzz/corpus tests/fuzz_corpus
