#!/usr/bin/env bash
# Compile-check and link-check neatml for macOS 12 from Linux, against Apple's SDK.
#
#   MACOS_SDK=/path/to/MacOSX12.sdk scripts/check_macos.sh
#   DNNL_INCLUDE=.deps/onednn3/include MACOS_SDK=... scripts/check_macos.sh
#                        (the CPU backend against another oneDNN's headers, e.g. a oneDNN 3
#                        from scripts/get_onednn.sh: Homebrew's onednn is 3.x)
#
# Nothing here runs on a Mac: this proves that every library source compiles for
# arm64-apple-macos12 and x86_64-apple-macos12 with -Wall -Wextra -Werror (an unknown
# selector, a wrong argument type, an API newer than macOS 12 fail), and that the Metal
# backend links with the core into a Mach-O executable against the SDK's .tbd stubs (a
# missing framework or symbol fails). Needs clang (Objective-C), ld64.lld (package lld) and,
# for the CPU backend's headers, Debian's libdnnl-dev. Apple's SDK is never copied here.
set -euo pipefail
if [ -z "${MACOS_SDK:-}" ]; then
  echo "SKIP: MACOS_SDK unset (point it at a macOS 12 SDK root, e.g. /tmp/macsdk/root)"
  exit 0
fi
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC_MACOS:-$(command -v clang-14 || command -v clang)}
[ -d "$MACOS_SDK/System/Library/Frameworks/MetalPerformanceShadersGraph.framework" ] ||
  { echo "macOS check: FAILED: $MACOS_SDK has no MetalPerformanceShadersGraph.framework"; exit 1; }
command -v ld64.lld >/dev/null || command -v ld64.lld-14 >/dev/null ||
  { echo "macOS check: FAILED: ld64.lld not found (apt-get install lld)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# oneDNN's public headers only (Debian libdnnl-dev), never the glibc ones.
mkdir -p "$tmp/include/oneapi/dnnl" "$tmp/bin"
dnnl_include=${DNNL_INCLUDE:-/usr/include}
cp "$dnnl_include"/oneapi/dnnl/*.h "$tmp/include/oneapi/dnnl/" 2>/dev/null ||
  { echo "macOS check: FAILED: $dnnl_include/oneapi/dnnl missing (apt-get install libdnnl-dev)"; exit 1; }
# clang -fuse-ld=lld looks for ld64.lld by that name on Mach-O targets.
ld=$(command -v ld64.lld || command -v ld64.lld-14)
ln -s "$ld" "$tmp/bin/ld64.lld"
export PATH="$tmp/bin:$PATH"

common=(-isysroot "$MACOS_SDK" -mmacosx-version-min=12.0 -Wall -Wextra -Werror
        -Wno-unused-parameter -Werror=unguarded-availability-new -std=gnu11 -O2
        -I"$root/include" -I"$root/src" -I"$tmp/include" -DNEATML_BUILDING)
# The CPU backend without OpenMP (Apple clang has none built in): pragmas are ignored.
cpu_flags=(-Wno-unknown-pragmas -Wno-source-uses-openmp -Wno-ignored-pragmas)
c_sources=("$root"/src/core/*.c "$root"/src/backends/registry.c "$root"/src/backends/cpu/*.c)
m_sources=("$root"/src/backends/metal/*.m)

cat > "$tmp/main.c" <<'C'
/* Link check: the core and the Metal backend resolve every symbol against the SDK. */
#include "neatml.h"
#include <stdio.h>
int main(void) {
    neat_device *dev = NULL;
    neat_status st = neat_device_create(NEAT_BACKEND_METAL, 0, &dev);
    printf("%s %s\n", neat_status_string(st), neat_last_error());
    neat_device_destroy(dev);
    return st == NEAT_OK ? 0 : 1;
}
C
cat > "$tmp/cpu_stub.c" <<'C'
/* The link check's registry names the CPU backend; oneDNN has no Mach-O stub here, so an
 * empty table stands in for it (the CPU sources are compile-checked, not linked). */
#include "backends/backend.h"
const nm_backend_ops nm_cpu_backend = {.abi_version = NM_BACKEND_ABI, .kind = NEAT_BACKEND_CPU,
                                       .name = "cpu"};
C

# ld64.lld 14 does not follow this SDK's umbrella re-exports (Foundation -> CoreFoundation,
# MetalPerformanceShaders -> MPSCore, MPSMatrix), so the link names those sub-libraries
# too; on a Mac, Apple's ld resolves them through the umbrellas (metal.cmake needs only those).
fail=0
for target in arm64-apple-macos12 x86_64-apple-macos12; do
  out="$tmp/$target"
  mkdir -p "$out"
  log="$out/log"
  ok=1 n=0
  for f in "${c_sources[@]}"; do
    extra=()
    case "$f" in */backends/cpu/*) extra=("${cpu_flags[@]}") ;; esac
    [ "$(basename "$f")" = registry.c ] && extra+=(-DNEATML_HAVE_METAL)
    obj="$out/$(basename "$(dirname "$f")")_$(basename "$f").o"
    "$cc" -target "$target" "${common[@]}" "${extra[@]}" -c "$f" -o "$obj" >>"$log" 2>&1 || ok=0
    n=$((n + 1))
  done
  for f in "${m_sources[@]}"; do
    "$cc" -target "$target" "${common[@]}" -fobjc-arc -c "$f" -o "$out/metal_$(basename "$f").o" >>"$log" 2>&1 || ok=0
    n=$((n + 1))
  done
  "$cc" -target "$target" "${common[@]}" -c "$tmp/main.c" -o "$out/main.o" >>"$log" 2>&1 || ok=0
  "$cc" -target "$target" "${common[@]}" -c "$tmp/cpu_stub.c" -o "$out/cpu_stub.o" >>"$log" 2>&1 || ok=0
  if [ $ok = 1 ]; then
    "$cc" -target "$target" -isysroot "$MACOS_SDK" -mmacosx-version-min=12.0 -fuse-ld=lld \
      "$out"/main.o "$out"/cpu_stub.o "$out"/core_*.o "$out"/backends_registry.c.o "$out"/metal_*.o \
      -framework Metal -framework MetalPerformanceShaders -framework MetalPerformanceShadersGraph \
      -framework Foundation -framework CoreFoundation -lobjc \
      -F"$MACOS_SDK/System/Library/Frameworks/MetalPerformanceShaders.framework/Frameworks" \
      -framework MPSCore -framework MPSMatrix -o "$out/neatml_metal_check" >>"$log" 2>&1 || ok=0
  fi
  if [ $ok = 1 ] && file "$out/neatml_metal_check" 2>/dev/null | grep -q Mach-O; then
    echo "$target: OK: $n sources compiled (-Wall -Wextra -Werror), Metal backend + core linked: $(file -b "$out/neatml_metal_check" | cut -d, -f1)"
  else
    echo "$target: FAILED"
    sed 's/^/  /' "$log" | head -60
    fail=1
  fi
done
if [ $fail = 0 ]; then
  dnnl_version=$(sed -nE 's/^#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+).*/\2/p' \
                 "$tmp/include/oneapi/dnnl/dnnl_version.h" | paste -sd.)
  echo "macOS check: OK ($("$cc" --version | head -1); oneDNN $dnnl_version headers; SDK $(sed -n 's/.*"Version":"\([^"]*\)".*/\1/p' "$MACOS_SDK/SDKSettings.json" 2>/dev/null || echo unknown))"
else
  echo "macOS check: FAILED"
  exit 1
fi
