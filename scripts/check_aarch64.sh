#!/usr/bin/env bash
# Run the CPU backend's tests on aarch64 Linux: the portable paths (no target_clones, no x86
# code in oneDNN) that an Apple Silicon build takes. On an x86-64 host:
#   1. installs what is missing: the Debian cross compilers, qemu-user, and the arm64 .deb
#      files of oneDNN and zlib, unpacked with dpkg -x into .deps-aarch64/ (the host's amd64
#      packages stay as they are; arm64 is added to dpkg's foreign architectures if needed);
#   2. builds the CPU backend, tests and examples into build-aarch64/ with
#      cmake/aarch64-linux-gnu.cmake;
#   3. runs every build-aarch64/test_* binary under qemu-aarch64 (natively on an aarch64 host),
#      once per emulated CPU: "max,sve=off" (Advanced SIMD only, as on Apple Silicon: oneDNN
#      takes its non-SVE paths) and "max" (qemu's default, with 512-bit SVE).
# Each binary ends with "<suite>: N passed, M failed, K skipped"; this script adds them up
# like run_tests.sh and ends with the plain line "N passed, M failed, K skipped".
# When something cannot be installed it prints "SKIP: <reason>" and exits 0.
# Environment:
#   AARCH64_TESTS="test_ops_layers test_backward"  run only these binaries (default: all)
#   AARCH64_QEMU_CPUS="max,sve=off max"  the qemu -cpu values to run the tests on
#   AARCH64_TIMEOUT=1800  seconds allowed to one binary (qemu is slow)
#   BUILD, DEPS, JOBS     build folder, unpacked packages folder, parallel jobs
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-aarch64}
DEPS=${DEPS:-.deps-aarch64}
JOBS=${JOBS:-$(nproc)}
TIMEOUT=${AARCH64_TIMEOUT:-1800}
passed=0 failed=0 skipped=0

skip() { echo "SKIP: $*"; exit 0; }

sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then sudo="sudo"; fi

install_missing() { # install_missing <package>...: apt-get install those not installed
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || skip "missing ${missing[*]} and no apt-get here"
  if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then skip "missing ${missing[*]}; not root and no sudo"; fi
  echo "check_aarch64: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/check_aarch64.apt.log 2>&1; then
    $sudo apt-get update -q >>/tmp/check_aarch64.apt.log 2>&1
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/check_aarch64.apt.log 2>&1 ||
      skip "apt-get install ${missing[*]} failed (offline?): see /tmp/check_aarch64.apt.log"
  fi
}

fetch_arm64_debs() { # the arm64 oneDNN and zlib, unpacked into $DEPS (once)
  local lib=$DEPS/usr/lib/aarch64-linux-gnu
  if [ -e "$lib/libdnnl.so.2" ] && [ -e "$DEPS/usr/include/oneapi/dnnl/dnnl.h" ] &&
     [ -e "$DEPS/usr/include/zlib.h" ] && [ -e "$lib/libz.so" ]; then
    return 0
  fi
  local pkgs=(libdnnl2:arm64 libdnnl-dev:arm64 zlib1g:arm64 zlib1g-dev:arm64)
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then skip "arm64 is not a dpkg architecture here; not root and no sudo"; fi
    echo "check_aarch64: dpkg --add-architecture arm64"
    $sudo dpkg --add-architecture arm64 || skip "dpkg --add-architecture arm64 failed"
    $sudo apt-get update -q >/tmp/check_aarch64.apt.log 2>&1 || skip "apt-get update failed (offline?)"
  fi
  if ! apt-cache show libdnnl2:arm64 >/dev/null 2>&1; then
    $sudo apt-get update -q >/tmp/check_aarch64.apt.log 2>&1 || skip "apt-get update failed (offline?)"
  fi
  apt-cache show libdnnl2:arm64 >/dev/null 2>&1 || skip "no libdnnl2:arm64 in the apt sources"
  local tmp; tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt-get download writes as _apt when it can
  echo "check_aarch64: downloading ${pkgs[*]} into $DEPS"
  if ! (cd "$tmp" && apt-get download "${pkgs[@]}") >/tmp/check_aarch64.apt.log 2>&1; then
    rm -rf "$tmp"; skip "apt-get download ${pkgs[*]} failed (offline?): see /tmp/check_aarch64.apt.log"
  fi
  rm -rf "$DEPS"; mkdir -p "$DEPS"
  local deb
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$DEPS" || { rm -rf "$tmp"; skip "dpkg -x $deb failed"; }; done
  rm -rf "$tmp"
  # Links such as libz.so -> /lib/aarch64-linux-gnu/libz.so.1 point into the target's root:
  # make them point into $DEPS instead.
  local l abs; abs=$(cd "$DEPS" && pwd)
  while IFS= read -r l; do ln -sfn "$abs$(readlink "$l")" "$l"; done < <(find "$DEPS" -type l -lname '/*')
}

. scripts/count.sh # (the working directory is the root)

host=$(uname -m)
cmake_args=(-DCMAKE_BUILD_TYPE=Release -DNEATML_CUDA=OFF)
case "$host" in
  aarch64|arm64)
    install_missing cmake make gcc g++ libdnnl-dev zlib1g-dev
    cpus=native
    ;;
  x86_64)
    install_missing cmake make gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
    if command -v qemu-aarch64 >/dev/null; then qemu=qemu-aarch64
    elif command -v qemu-aarch64-static >/dev/null; then qemu=qemu-aarch64-static
    else install_missing qemu-user; qemu=qemu-aarch64
    fi
    command -v "$qemu" >/dev/null || skip "$qemu not found after installing qemu-user"
    fetch_arm64_debs
    deps_abs=$(cd "$DEPS" && pwd)
    cmake_args+=(-DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" -DDNNL_ROOT="$deps_abs")
    cpus=${AARCH64_QEMU_CPUS:-"max,sve=off max"}
    ;;
  *) skip "host $host: neither x86-64 (cross + qemu) nor aarch64 (native)" ;;
esac

mkdir -p "$BUILD"
if ! { cmake -S . -B "$BUILD" "${cmake_args[@]}" >"$BUILD/configure.log" 2>&1 &&
       cmake --build "$BUILD" -j"$JOBS" >"$BUILD/build.log" 2>&1; }; then
  echo "build of $BUILD failed:"; tail -n 40 "$BUILD/configure.log" "$BUILD/build.log"
  echo "$passed passed, $((failed + 1)) failed, $skipped skipped"
  exit 1
fi
if [ "$cpus" != native ]; then
  dnnl_version=$(sed -nE 's/^#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+).*/\2/p' \
                 "$DEPS/usr/include/oneapi/dnnl/dnnl_version.h" | paste -sd.)
  echo "check_aarch64: $("$qemu" --version | head -n1), $(aarch64-linux-gnu-gcc --version | head -n1), oneDNN $dnnl_version (arm64)"
fi
file -L "$BUILD/libneatml.so" 2>/dev/null | sed 's/^/check_aarch64: /'

tests=${AARCH64_TESTS:-$(for s in tests/test_*.c; do basename "$s" .c; done)}
start=$(date +%s)
for cpu in $cpus; do
  runner=()
  if [ "$cpu" != native ]; then
    # -L: the guest's ld.so and libc (libgomp, libstdc++ too) from the cross libc's tree;
    # -E: the unpacked oneDNN for the guest's loader only (not the host's qemu).
    runner=("$qemu" -cpu "$cpu" -L /usr/aarch64-linux-gnu
            -E "LD_LIBRARY_PATH=$deps_abs/usr/lib/aarch64-linux-gnu:$deps_abs/lib/aarch64-linux-gnu")
  fi
  for name in $tests; do
    bin=$BUILD/$name
    log=$bin.${cpu//[,=]/-}.log
    if [ ! -x "$bin" ]; then
      echo "aarch64 [$cpu] $name: not built"; failed=$((failed + 1)); continue
    fi
    t0=$(date +%s)
    out=$(timeout "$TIMEOUT" "${runner[@]}" "$bin" 2>&1); rc=$?
    printf '%s\n' "$out" > "$log"
    count "aarch64 [$cpu] $name ($(( $(date +%s) - t0 )) s)" "$out"
    if [ $rc -ne 0 ] && ! grep -qE ' [1-9][0-9]* failed' <<<"$(printf '%s\n' "$out" | tail -n1)"; then
      echo "aarch64 [$cpu] $name: exit status $rc$([ $rc -eq 124 ] && echo " (timeout ${TIMEOUT} s)") (see $log)"
      printf '%s\n' "$out" | tail -n 20
      failed=$((failed + 1))
    elif [ $rc -ne 0 ]; then
      printf '%s\n' "$out" | grep -E '^FAIL' | head -n 20
    fi
  done
done
echo "check_aarch64: tests took $(( $(date +%s) - start )) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
