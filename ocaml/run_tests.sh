#!/bin/sh
# Builds the OCaml bindings, their tests and examples with dune, runs the alcotest suite
# twice (native code, then self-contained bytecode, whose stubs of more than five arguments
# are separate C entry points), and prints as its last line exactly
#   ocaml: N passed, M failed
# counting alcotest test cases of both runs.
#
# NEATML_BUILD_DIR: the CMake build folder holding libneatml.so (default: build/ at the
# repository root). A build failure counts as one failed case; so does a run that exits
# non-zero without reporting a failed case (a crash). Arguments go to both test programs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
NEATML_BUILD_DIR=${NEATML_BUILD_DIR:-$here/../build}
export NEATML_BUILD_DIR
cd "$here" || exit 1

if ! dune build --root . test/test_gpu.exe test/test_gpu.bc.exe examples/fashion_mnist.exe 2>&1; then
    echo "ocaml: build failed (NEATML_BUILD_DIR=$NEATML_BUILD_DIR)"
    echo "ocaml: 0 passed, 1 failed"
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
passed=0
failed=0
for exe in test_gpu.exe test_gpu.bc.exe; do
    echo "== $exe"
    ./_build/default/test/$exe --color=never "$@" >"$log" 2>&1
    rc=$?
    cat "$log"
    # alcotest prints one "[OK]" or "[FAIL]" line per case; the first failure starts with ">".
    p=$(grep -cE '^[> ]*\[OK\]' "$log")
    f=$(grep -cE '^[> ]*\[FAIL\]' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "ocaml: $exe exited with status $rc without a failed case"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
done
echo "ocaml: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
