#!/usr/bin/env bash
# gpu_pack.sh — on the development machine, fill .gpu/ (ignored by git) with what
# scripts/gpu_check.sh needs on a GPU machine that has no package registry:
#   deps.tar.xz              Debian's oneDNN (libdnnl2, libdnnl-dev) unpacked under .deps/usr,
#                            and the libOpenCL.so.1 it links to under .deps/ocl
#   fashion-mnist/*.gz       Debian's dataset-fashion-mnist
#   fashion_mnist_ocaml.exe  the OCaml example, native code (needs libneatml.so.0.2 at run time)
#   test_gpu_ocaml.exe       the OCaml test suite, native code
# All of it together stays under the device tool's 64 MiB (about 37 MiB). Run `make test` or
# `make` first so that build/ and the OCaml tree exist.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p .gpu/fashion-mnist
grep -qx '.gpu/' .git/info/exclude 2>/dev/null || echo '.gpu/' >>.git/info/exclude
grep -qx '.deps/' .git/info/exclude 2>/dev/null || echo '.deps/' >>.git/info/exclude

if [ ! -f .deps/usr/lib/x86_64-linux-gnu/libdnnl.so.2 ] || [ ! -d .deps/ocl ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download libdnnl2 libdnnl-dev ocl-icd-libopencl1 >/dev/null)
  for f in "$tmp"/libdnnl*.deb; do dpkg -x "$f" .deps; done
  dpkg -x "$tmp"/ocl-icd-libopencl1*.deb .deps/ocl
  rm -rf "$tmp"
fi
[ -f .gpu/deps.tar.xz ] || tar -C "$ROOT" -cJf .gpu/deps.tar.xz .deps/usr .deps/ocl

bash scripts/install_deps.sh demo
cp -u /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/

(cd ocaml && NEATML_BUILD_DIR="$ROOT/build" dune build --root . examples/fashion_mnist.exe test/test_gpu.exe)
install -m 755 ocaml/_build/default/examples/fashion_mnist.exe .gpu/fashion_mnist_ocaml.exe
install -m 755 ocaml/_build/default/test/test_gpu.exe .gpu/test_gpu_ocaml.exe
du -sh .gpu
