#!/usr/bin/env bash
# gpu_check.sh — the whole check of the CUDA backend on a machine with an NVIDIA GPU:
#   1. build (Release, CUDA backend; oneDNN from .deps/usr when the system has none);
#   2. every build/test_* binary on every backend that opens (cpu and cuda), then again on
#      cuda alone with NEATML_CUDA_GRAPHS=1 (every command buffer runs as a CUDA graph from
#      its first commit, and a failed capture fails the commit); test_conformance runs every
#      op in strict, integer and TF32 passes, each case as a first commit and a replay;
#      test_conformance and test_dtype again on cuda with NEATML_CONV_FUSE=3 (the fused
#      convolution forced on float32 too; one cuDNN refuses fails) and =0 (the unfused path);
#      test_conformance and test_determinism with NEATML_CONV_GEMM=2 (strict float32's
#      backward filter always by conv_gemm.cu's im2col GEMM) and =3 (its direct kernel); test_conformance, test_dtype,
#      test_determinism and test_reliability with NEATML_CONV_ENGINE=2 (cuDNN's backend-API engines wherever one is
#      allowed) and =0 (the legacy algorithms alone); test_conformance, test_determinism and
#      test_dtype with NEATML_GEMM_OWN=2 (gemm_small.cu on every GEMM it fits; conformance
#      also with NEATML_CONV_GEMM=2, the per-image dw products), and
#      test_conformance and test_copy_overlap with NEATML_CUDA_PDL=0 (no programmatic launch),
#      test_conformance and test_determinism with NEATML_CONV_SMALL=0 (conv_small.cu off);
#   3. training ("train"): examples/fashion_mnist on cuda for 5 epochs, and the OCaml
#      example and OCaml test suite when their executables were carried (see below);
#   4. the benchmark (neatml_bench --backend cuda --json, --seed-table) and bench/compare.py
#      side by side with PyTorch; the cases with a biased convolution again with
#      NEATML_CONV_FUSE=0 and =3 (summary rows "conv default / unfused / forced");
#   5. compute-sanitizer memcheck, racecheck, initcheck and synccheck, with the debug pool,
#      on the cuda part of test_cmdbuf, test_reliability, test_copy_overlap, test_pool,
#      test_optim and test_conformance, and sanitizer_baseline (cuBLASLt's GEMMs alone, no
#      neatml: what the tool reports on NVIDIA's kernels by themselves). SANITIZE_TESTS names
#      others: the whole suite is
#      SANITIZE_TESTS="$(cd tests; ls test_*.c | sed 's/\.c$//' | grep -v collectives)";
#      NAME@i/n runs shard i of n of test_conformance's table (NEATML_TEST_SHARD);
#      SANITIZE_TOOLS the tools; SANITIZE_RUNS="tool:test ..." names the runs instead of
#      every tool on every test; SANITIZE_JOBS=N runs N at once on the GPU; SANITIZE_TIMEOUT
#      the seconds each run may take (default 500). Two instrumented processes on one GPU
#      break graphs with conditional nodes (illegal addresses; bench/sanitizer_graph.cu shows
#      it without neatml): with SANITIZE_JOBS > 1, confirm a failure in a replayed graph by a
#      run alone. racecheck runs test_copy_overlap with NEATML_CUDA_GRAPHS=0:
#      the tool's own process dies on its alternating part as graphs (docs/RELIABILITY.md).
# Logs go to $OUT (default ./gpu-out): env.txt build.log tests.log sanitizer.log bench.json
# compare.txt compare.json summary.txt (the device tool brings back at most 8 files). The
# summary table is printed last.
#   usage: scripts/gpu_check.sh [all|build|tests|train|bench|sanitize]...   (default: all)
#
# The GPU machine has no oneDNN and no Fashion-MNIST; what it needs travels in .gpu/ (ignored
# by git), made on the development machine by scripts/gpu_pack.sh: deps.tar.xz (Debian's
# oneDNN, unpacked here into .deps/), fashion-mnist/*.gz, and the OCaml executables
# fashion_mnist_ocaml.exe and test_gpu_ocaml.exe (native code, linked to libneatml.so.0.2,
# which they find in build/ through LD_LIBRARY_PATH).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
BUILD=${BUILD:-build}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT"
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(all)
want() { local s; for s in "${STEPS[@]}"; do [ "$s" = all ] || [ "$s" = "$1" ] && return 0; done; return 1; }

SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
row() { printf '%-34s %s\n' "$1" "$2" | tee -a "$SUMMARY"; }

if [ ! -d "$ROOT/.deps/usr" ] && [ -f "$ROOT/.gpu/deps.tar.xz" ]; then
  tar -C "$ROOT" -xJf "$ROOT/.gpu/deps.tar.xz"
fi
DNNL_ARGS=()
if [ -d "$ROOT/.deps/usr" ]; then
  DNNL_ARGS=(-DDNNL_ROOT="$ROOT/.deps/usr")
  export LD_LIBRARY_PATH="$ROOT/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # oneDNN links libOpenCL.so.1; the system's, else the copy carried in .deps/ocl
  [ -d "$ROOT/.deps/ocl/usr/lib/x86_64-linux-gnu" ] &&
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$ROOT/.deps/ocl/usr/lib/x86_64-linux-gnu"
fi
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1
  nvcc --version 2>&1 | tail -n 2
  ls /usr/lib/x86_64-linux-gnu/libcudnn.so.* /usr/local/cuda/lib64/libcudnn.so.* 2>/dev/null | head -n 3
  cmake --version | head -n 1
  uname -r
} >"$OUT/env.txt" 2>&1
row "gpu" "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1)"

# ---- 1. build ----------------------------------------------------------------------------------
if want build || [ ! -x "$BUILD/test_conformance" ]; then
  t0=$(date +%s)
  if cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release "${DNNL_ARGS[@]}" >"$OUT/build.log" 2>&1 &&
     cmake --build "$BUILD" -j "$JOBS" >>"$OUT/build.log" 2>&1; then
    if grep -q "neatml: CUDA backend" "$OUT/build.log"; then
      row "build" "ok ($(( $(date +%s) - t0 )) s, CUDA backend built)"
    else
      row "build" "ok but WITHOUT the CUDA backend (see build.log)"
    fi
  else
    row "build" "FAILED (see build.log)"
    tail -n 30 "$OUT/build.log"
    cat "$SUMMARY"
    exit 1
  fi
fi

# run_test <log> <binary> [env...]: run, log, and print "<passed> passed, <failed> failed ..."
result_line() { grep -E '^[A-Za-z0-9_-]+: [0-9]+ passed, [0-9]+ failed' | tail -n1; }
run_test() {
  local log=$1 bin=$2; shift 2
  local out rc
  out=$(env "$@" timeout 300 "$bin" 2>&1); rc=$?
  { echo "===== $* $bin (exit $rc)"; printf '%s\n' "$out"; } >>"$log"
  local line; line=$(printf '%s\n' "$out" | result_line)
  [ -z "$line" ] && line="no result line (exit $rc)"
  [ $rc -ne 0 ] && line="$line [exit $rc]"
  echo "$line"
}

# ---- 2. tests -----------------------------------------------------------------------------------
if want tests; then
  : >"$OUT/tests.log"
  for src in tests/test_*.c; do
    bin=$BUILD/$(basename "$src" .c)
    row "$(basename "$bin") (cpu+cuda)" "$(run_test "$OUT/tests.log" "$bin")"
  done
  for src in tests/test_*.c; do
    bin=$BUILD/$(basename "$src" .c)
    row "$(basename "$bin") (cuda, graphs)" \
        "$(run_test "$OUT/tests.log" "$bin" NEATML_TEST_BACKENDS=cuda NEATML_CUDA_GRAPHS=1)"
  done
  # The convolution with a bias (conv.cu): NEATML_CONV_FUSE=3 takes the fused cuDNN call on
  # every float32 row with a bias and relu/none and fails any call cuDNN refuses (instead of
  # the silent fallback); =0 runs the unfused path it replaced.
  for t in test_conformance test_dtype; do
    for f in 3 0; do
      row "$t (cuda, NEATML_CONV_FUSE=$f)" \
          "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_CONV_FUSE=$f)"
    done
  done
  # Strict float32's backward filter (conv_gemm.cu): NEATML_CONV_GEMM=2 takes neatml's im2col
  # GEMM on every row it applies to, whatever the timing would pick.
  # =3 takes its direct kernel (3x3, stride 1, small planes) wherever it fits.
  for t in test_conformance test_determinism; do
    for g in 2 3; do
      row "$t (cuda, NEATML_CONV_GEMM=$g)" \
          "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_CONV_GEMM=$g)"
    done
  done
  # cuDNN's backend-API engines (conv_engine.cu): NEATML_CONV_ENGINE=2 takes the heuristics'
  # first allowed engine on every slot that has one (whatever the timing would pick), =0 the
  # legacy algorithms alone.
  for t in test_conformance test_dtype test_determinism test_reliability; do
    for e in 2 0; do
      row "$t (cuda, NEATML_CONV_ENGINE=$e)" \
          "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_CONV_ENGINE=$e)"
    done
  done
  # neatml's own small GEMM (gemm_small.cu): NEATML_GEMM_OWN=2 runs it on every GEMM it fits,
  # whatever the timing would pick; programmatic dependent launch off (NEATML_CUDA_PDL=0).
  for t in test_conformance test_determinism test_dtype; do
    row "$t (cuda, NEATML_GEMM_OWN=2)" \
        "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_GEMM_OWN=2)"
  done
  row "test_conformance (cuda, NEATML_GEMM_OWN=2 NEATML_CONV_GEMM=2)" \
      "$(run_test "$OUT/tests.log" "$BUILD/test_conformance" NEATML_TEST_BACKENDS=cuda NEATML_GEMM_OWN=2 NEATML_CONV_GEMM=2)"
  for t in test_conformance test_copy_overlap; do
    row "$t (cuda, NEATML_CUDA_PDL=0)" \
        "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_CUDA_PDL=0)"
  done
  # conv_small.cu (3x3 stride-1 convolutions of 1 to 4 channels) off: those rows on cuDNN
  # and conv_gemm.cu as before it.
  for t in test_conformance test_determinism; do
    row "$t (cuda, NEATML_CONV_SMALL=0)" \
        "$(run_test "$OUT/tests.log" "$BUILD/$t" NEATML_TEST_BACKENDS=cuda NEATML_CONV_SMALL=0)"
  done
  grep -E '^(FAIL|SKIP)' "$OUT/tests.log" | sort | uniq -c | sort -rn | head -n 20
  grep -E '^cuda ' "$OUT/tests.log" | grep -v ' 0 failed' | head -n 20
fi

# ---- 3. training --------------------------------------------------------------------------------
if want train; then
  data=/usr/share/datasets/fashion-mnist
  [ -d "$ROOT/.gpu/fashion-mnist" ] && data=$ROOT/.gpu/fashion-mnist
  if [ -f "$data/train-images-idx3-ubyte.gz" ]; then
    out=$(timeout 300 "$BUILD/fashion_mnist" --backend cuda --epochs 5 --data "$data" \
          --plot /tmp/fashion_mnist.svg 2>&1); rc=$?
    { echo "===== fashion_mnist --backend cuda --epochs 5 (exit $rc)"; printf '%s\n' "$out"; } >>"$OUT/tests.log"
    row "fashion_mnist (C, cuda)" "$(printf '%s\n' "$out" | grep '^final' || echo "no final line (exit $rc)")"
    printf '%s\n' "$out" | grep '^final' >"$OUT/train_final.txt"
    # mixed precision: needs the CUDA half kernels of the layers (issue 14)
    for p in bf16 fp16; do
      out=$(timeout 300 "$BUILD/fashion_mnist" --backend cuda --epochs 5 --precision $p \
            --data "$data" --plot /tmp/fashion_mnist_$p.svg 2>&1); rc=$?
      { echo "===== fashion_mnist --backend cuda --epochs 5 --precision $p (exit $rc)"; printf '%s\n' "$out"; } >>"$OUT/tests.log"
      row "fashion_mnist (C, cuda, $p)" "$(printf '%s\n' "$out" | grep '^final' || echo "no final line (exit $rc)")"
      printf '%s\n' "$out" | grep '^final' >>"$OUT/train_final.txt"
    done
    if [ -x "$ROOT/.gpu/fashion_mnist_ocaml.exe" ]; then
      out=$(LD_LIBRARY_PATH="$ROOT/$BUILD:${LD_LIBRARY_PATH:-}" timeout 300 \
            "$ROOT/.gpu/fashion_mnist_ocaml.exe" --backend cuda --epochs 5 --data "$data" 2>&1); rc=$?
      { echo "===== OCaml fashion_mnist --backend cuda --epochs 5 (exit $rc)"; printf '%s\n' "$out"; } >>"$OUT/tests.log"
      row "fashion_mnist (OCaml, cuda)" "$(printf '%s\n' "$out" | grep '^final' || echo "no final line (exit $rc)")"
    fi
  else
    row "fashion_mnist" "skipped: no data set (.gpu/fashion-mnist)"
  fi
  if [ -x "$ROOT/.gpu/test_gpu_ocaml.exe" ]; then
    # the suite's device is AUTO, which is the GPU here
    out=$(LD_LIBRARY_PATH="$ROOT/$BUILD:${LD_LIBRARY_PATH:-}" timeout 300 \
          "$ROOT/.gpu/test_gpu_ocaml.exe" --color=never 2>&1); rc=$?
    { echo "===== OCaml test_gpu (exit $rc)"; printf '%s\n' "$out"; } >>"$OUT/tests.log"
    row "OCaml test_gpu (auto = cuda)" "$(printf '%s\n' "$out" | grep -E 'Test Successful|failure|Full test results' | tail -n1) [exit $rc]"
  fi
fi

# ---- 4. benchmark -------------------------------------------------------------------------------
if want bench; then
  if [ -x "$BUILD/neatml_bench" ]; then
    if timeout 300 "$BUILD/neatml_bench" --backend cuda --json >"$OUT/bench.json" 2>>"$OUT/build.log"; then
      row "neatml_bench --backend cuda" "ok ($(grep -c '"case"' "$OUT/bench.json") cases, bench.json)"
    else
      row "neatml_bench --backend cuda" "FAILED (exit $?, see build.log)"
    fi
    # The cases with a convolution and a bias, again with cuDNN's fused call off and forced
    # on float32 (conv.cu, NEATML_CONV_FUSE); median ms: default / unfused / forced.
    fuse_cases=(conv2d_bias_relu_256f lenet_train_step_b128 lenet_train_step_b128_bf16
                lenet_train_step_b1024_bf16)
    for f in 0 3; do
      NEATML_CONV_FUSE=$f timeout 300 "$BUILD/neatml_bench" --backend cuda --json \
        $(printf -- '--case %s ' "${fuse_cases[@]}") >"$OUT/bench_fuse$f.tmp" 2>>"$OUT/build.log" ||
        row "neatml_bench NEATML_CONV_FUSE=$f" "FAILED (exit $?, see build.log)"
    done
    python3 - "$OUT/bench.json" "$OUT/bench_fuse0.tmp" "$OUT/bench_fuse3.tmp" <<'PY' | while read -r l; do row "conv default/unfused/forced" "$l"; done
import json, sys
def load(path):
    out = {}
    try:
        for line in open(path):
            if line.strip().startswith("{"):
                c = json.loads(line)
                if "median_ms" in c: out[c["case"]] = c["median_ms"]
    except OSError:
        pass
    return out
runs = [load(p) for p in sys.argv[1:4]]
for case in runs[1]:
    ms = ["%.4f" % r[case] if case in r else "-" for r in runs]
    print("%s: %s ms" % (case, " / ".join(ms)))
PY
    rm -f "$OUT/bench_fuse0.tmp" "$OUT/bench_fuse3.tmp"
    if [ -f bench/compare.py ]; then
      timeout 120 "$BUILD/neatml_bench" --backend cuda --seed-table >"$OUT/compare.txt" 2>&1
      PYTHONUNBUFFERED=1 timeout 400 python3 bench/compare.py --backend cuda --bench "$BUILD/neatml_bench" \
        --reps 20 --json-out "$OUT/compare.json" >>"$OUT/compare.txt" 2>&1
      row "bench/compare.py --backend cuda" "exit $? (compare.txt)"
      # The end-to-end example against the replayed step alone (the recorded host copies
      # should leave it within a few percent).
      if [ -s "$OUT/train_final.txt" ]; then
        python3 - "$OUT/bench.json" "$OUT/train_final.txt" <<'PY' | while read -r l; do row "training vs step" "$l"; done
import json, re, sys
step = None
for line in open(sys.argv[1]):
    if line.strip().startswith("{"):
        c = json.loads(line)
        if c.get("case") == "lenet_train_step_b128": step = c.get("rate")
line = open(sys.argv[2]).read()  # the steady rate: like the step's, after the warm-up
m = re.search(r"steady_images_per_s=([0-9.]+)", line) or re.search(r"images_per_s=([0-9.]+)", line)
if step and m:
    print("example %.0f img/s, replayed step %.0f img/s: %.0f%%" % (float(m.group(1)), step, 100 * float(m.group(1)) / step))
PY
      fi
      tail -n 20 "$OUT/compare.txt"
    fi
  else
    row "neatml_bench" "not built"
  fi
fi

# ---- 5. compute-sanitizer ----------------------------------------------------------------------
if want sanitize; then
  : >"$OUT/sanitizer.log"
  if command -v compute-sanitizer >/dev/null; then
    sanitize() { # sanitize <tool> <test[@i/n]> <log> [gpu]: one run, its log, its summary row in <log>.row
      local out rc bin=${2%@*} shard= gpu=${4:-${CUDA_VISIBLE_DEVICES:-}}
      [ "$bin" != "$2" ] && shard=${2#*@} # test_conformance@1/4: its rows 1, 5, 9, ...
      # SANITIZE_ARGS_<tool>: more options for that tool, e.g.
      # SANITIZE_ARGS_racecheck="--kernel-name-exclude regex=nvjet" (NVIDIA's kernels left out)
      local extra_var="SANITIZE_ARGS_$1"; local extra=(${!extra_var:-})
      local graphs=${NEATML_CUDA_GRAPHS:-}
      [ "$1" = racecheck ] && [ "$bin" = test_copy_overlap ] && graphs=0 # the tool crashes (above)
      # The debug pool: exact-size blocks, nothing cached, so the tool sees every overrun
      # and every use after free of tensor memory (src/core/pool.c).
      out=$(CUDA_VISIBLE_DEVICES=$gpu NEATML_TEST_BACKENDS=cuda NEATML_DEBUG_POOL=1 NEATML_TEST_SHARD=$shard \
            NEATML_CUDA_GRAPHS=$graphs \
            timeout "${SANITIZE_TIMEOUT:-500}" compute-sanitizer \
            --tool "$1" "${extra[@]}" --error-exitcode 86 --print-limit 20 "$BUILD/$bin" 2>&1); rc=$?
      { echo "===== $1 $2 (exit $rc) ${extra[*]}${graphs:+ NEATML_CUDA_GRAPHS=$graphs}"; printf '%s\n' "$out"; } >"$3"
      local summary; summary=$(printf '%s\n' "$out" | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' | tail -n1)
      local res; res=$(printf '%s\n' "$out" | grep -E '^[A-Za-z0-9_-]+: [0-9]+ passed, [0-9]+ failed' | tail -n1)
      printf '%-34s %s\n' "$1 $2" "${summary:-no summary} | ${res:-no result line} [exit $rc]" >"$3.row"
    }
    # SANITIZE_JOBS runs at once (the GPU has room for several; default 1), spread over the
    # GPUs SANITIZE_GPUS names (e.g. "0 1"; default: whatever CUDA_VISIBLE_DEVICES shows)
    jobs_max=${SANITIZE_JOBS:-1} k=0 logs=() runs=() gpus=(${SANITIZE_GPUS:-})
    if [ -n "${SANITIZE_RUNS:-}" ]; then
      runs=($SANITIZE_RUNS) # tool:test pairs, e.g. "initcheck:test_dtype racecheck:sanitizer_baseline"
    else
      for tool in ${SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}; do
        for t in ${SANITIZE_TESTS:-sanitizer_baseline test_cmdbuf test_reliability test_pool test_optim test_conformance test_copy_overlap}; do
          runs+=("$tool:$t")
        done
      done
    fi
    for r in "${runs[@]}"; do
      log="$OUT/san.$k.log"; logs+=("$log"); k=$((k + 1))
      gpu=; [ ${#gpus[@]} -gt 0 ] && gpu=${gpus[$(((k - 1) % ${#gpus[@]}))]}
      sanitize "${r%%:*}" "${r#*:}" "$log" "$gpu" &
      while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do sleep 1; done
    done
    wait
    for log in "${logs[@]}"; do
      cat "$log" >>"$OUT/sanitizer.log"; tee -a "$SUMMARY" <"$log.row"; rm -f "$log" "$log.row"
    done
  else
    row "compute-sanitizer" "not found"
  fi
fi

echo
echo "==== summary ($(head -n1 "$OUT/env.txt"))"
cat "$SUMMARY"
