#!/usr/bin/env bash
# Fetch a oneDNN 3.x from PyPI's wheels and unpack it into a prefix that CMake's DNNL_ROOT
# takes (DIR/include, DIR/lib). The default build uses Debian's oneDNN 2.6 (libdnnl-dev)
# and needs none of this; docs/HACKING.md ("oneDNN 3") and docs/BENCHMARKS.md ("oneDNN 2.6
# against 3.13 on this CPU") say when it is worth it.
#
#   scripts/get_onednn.sh [DIR] [gomp|sycl]      DIR defaults to .deps/onednn3
#
#   gomp  onednn-cpu-gomp + onednn-devel-cpu-gomp 2023.2.0: oneDNN 3.2, CPU only, GNU OpenMP
#         (the threading of Debian's 2.6 and of neatml's own loops); 39 MB. The default.
#   sycl  onednn + onednn-devel 2026.1.0: oneDNN 3.13, built for SYCL with TBB threading.
#         Its CPU engine is a SYCL device: it needs Intel's compiler and SYCL runtimes
#         (dpcpp-cpp-rt and what it pulls) and the OpenCL CPU runtime (intel-opencl-rt),
#         about 580 MB of wheels, and at run time the environment of DIR/env.sh
#         (LD_LIBRARY_PATH, OCL_ICD_FILENAMES); without the latter no CPU device opens.
#
# Then: cmake -S . -B build-dnnl3 -DCMAKE_BUILD_TYPE=Release -DDNNL_ROOT=DIR
# (the build tree's rpath finds DIR/lib; for sycl, `. DIR/env.sh` before running).
# Needs python3 with pip (Debian: python3-pip); `pip download` installs nothing.
set -euo pipefail
DIR=${1:-.deps/onednn3}
VARIANT=${2:-gomp}
PIP=${PIP:-python3 -m pip}

case "$VARIANT" in
gomp) WHEELS=(onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0) ;;
sycl)
  WHEELS=(onednn==2026.1.0 onednn-devel==2026.1.0 intel-sycl-rt==2026.2.0
    intel-cmplr-lib-rt==2026.2.0 intel-cmplr-lib-ur==2026.2.0 umf==1.2.0 tcmlib==1.6.0
    tbb==2023.2.0 intel-opencl-rt==2026.2.0)
  ;;
*)
  echo "get_onednn: unknown variant '$VARIANT' (gomp or sycl)" >&2
  exit 2
  ;;
esac

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
dl="$DIR/wheels"
mkdir -p "$dl"
# --no-deps: the list above is the whole closure that the libraries load
$PIP download --quiet --no-deps --only-binary=:all: -d "$dl" "${WHEELS[@]}"

# A wheel keeps only the data files: <name>.data/data/{lib,include,...}. Zip has no
# symbolic links, so libfoo.so, libfoo.so.N and libfoo.so.N.M come as three copies: keep
# the longest name and link the others to it.
python3 - "$dl" "$DIR" <<'EOF'
import os, re, sys, zipfile
dl, out = sys.argv[1], sys.argv[2]
for whl in sorted(os.listdir(dl)):
    if not whl.endswith(".whl"):
        continue
    with zipfile.ZipFile(os.path.join(dl, whl)) as z:
        libs = {}
        for info in z.infolist():
            m = re.match(r"[^/]+\.data/data/((include|lib|etc)/.+)$", info.filename)
            if not m or info.is_dir():
                continue
            rel = m.group(1)
            if rel.startswith("lib/cmake/"):
                continue  # the wheel's CMake config points at paths of its own build
            if re.search(r"\.so(\.\d+)*$", rel):
                libs.setdefault((info.CRC, info.file_size), []).append((rel, info))
                continue
            dest = os.path.join(out, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as f:
                f.write(src.read())
        for copies in libs.values():
            copies.sort(key=lambda c: len(c[0]))
            real, info = copies[-1]
            dest = os.path.join(out, real)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with z.open(info) as src, open(dest, "wb") as f:
                f.write(src.read())
            for rel, _ in copies[:-1]:
                link = os.path.join(out, rel)
                if os.path.lexists(link):
                    os.remove(link)
                os.symlink(os.path.basename(real), link)
EOF

if [ "$VARIANT" = sycl ]; then
  cat >"$DIR/env.sh" <<EOF
# oneDNN 3.13 (SYCL build) from $DIR: its runtimes and the OpenCL CPU device
export LD_LIBRARY_PATH="$DIR/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export OCL_ICD_FILENAMES="$DIR/lib/libintelocl.so"
EOF
fi
version=$(sed -nE 's/^#define DNNL_VERSION_(MAJOR|MINOR|PATCH) ([0-9]+).*/\2/p' \
  "$DIR/include/oneapi/dnnl/dnnl_version.h" | paste -sd.)
echo "get_onednn: oneDNN $version ($VARIANT) in $DIR: cmake ... -DDNNL_ROOT=$DIR"
