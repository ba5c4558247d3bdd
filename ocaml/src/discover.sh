#!/bin/sh
# Writes the C flags that find neatml.h and libneatml.so into c_flags.sexp and
# c_library_flags.sexp (dune runs this inside _build; see src/dune).
#
# NEATML_BUILD_DIR: the CMake build folder holding libneatml.so (default ../build, i.e. the
# repository's build/ beside ocaml/); NEATML_INCLUDE_DIR: the folder of neatml.h (default
# ../include). Relative values are taken from ocaml/. Paths are made absolute because the
# compiler runs inside dune's _build tree, and the rpath must hold wherever the test runs.
set -eu
# dune runs rules in <ocaml>/_build/<context>/src (or a sandbox below _build): the source
# root of the dune project is what precedes /_build/.
ocaml_root=${PWD%%/_build/*}
abs() {
    case "$1" in
        /*) printf '%s' "$1" ;;
        *) printf '%s/%s' "$ocaml_root" "$1" ;;
    esac
}
build_dir=$(abs "${NEATML_BUILD_DIR:-../build}")
include_dir=$(abs "${NEATML_INCLUDE_DIR:-../include}")
if [ ! -f "$include_dir/neatml.h" ]; then
    echo "neatml: no neatml.h in $include_dir (set NEATML_INCLUDE_DIR)" >&2
    exit 1
fi
if [ ! -e "$build_dir/libneatml.so" ] && [ ! -e "$build_dir/libneatml.dylib" ]; then
    echo "neatml: no libneatml.so in $build_dir: build the C library first" >&2
    echo "  (cmake -S . -B build && cmake --build build), or set NEATML_BUILD_DIR" >&2
    exit 1
fi
build_dir=$(cd "$build_dir" && pwd -P)
include_dir=$(cd "$include_dir" && pwd -P)
printf '(-I%s)\n' "$include_dir" > c_flags.sexp
printf '(-L%s -lneatml -Wl,-rpath,%s)\n' "$build_dir" "$build_dir" > c_library_flags.sexp
