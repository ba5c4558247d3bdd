#!/usr/bin/env bash
# gpu_dist.sh — the collectives on a machine with 2 NVIDIA GPUs (NCCL), in one call:
#   1. build (scripts/gpu_check.sh build: Release, CUDA backend, oneDNN carried in .gpu/);
#   2. test_collectives on NCCL across the 2 GPUs as 2 processes (RANK/WORLD_SIZE/LOCAL_RANK,
#      rank 0 writes the id file): default, NEATML_CUDA_GRAPHS=1 (every buffer a CUDA graph
#      from its first commit), and NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 (sockets over
#      loopback);
#   3. compute-sanitizer (memcheck) on the 2-process collective test;
#   4. all-reduce bus bandwidth, 64 and 256 MiB float32: neatml (a replayed buffer of one
#      neat_all_reduce, device time) beside NCCL itself (build/nccl_peer, timed the same way);
#   5. examples/fashion_mnist data-parallel, 5 epochs (data in .gpu/fashion-mnist as for
#      gpu_check.sh): 2 processes (RANK/WORLD_SIZE/LOCAL_RANK, id file) and one process
#      driving both GPUs (--devices 2), and the OCaml example as 2 processes when its
#      executable was carried; final lines in the summary, logs in dist.log;
#   6. LeNet step data-parallel, weak scaling (128 images per GPU): images/s per GPU on 1
#      and 2 GPUs, neatml (the example, 1 epoch, its steady_images_per_s divided by the
#      ranks: host gather and copies included) beside PyTorch DDP (bench/ddp_lenet.py:
#      random data resident on the GPU, CUDA events); logs in bench.txt.
# NVLink multicast stays off (NCCL_NVLS_ENABLE=0). Logs and the summary go to $OUT (default
# ./gpu-out): env.txt build.log dist.log sanitizer.log bench.txt summary.txt. Every step's
# failure is reported in the summary and the script goes on.
#   usage: scripts/gpu_dist.sh
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
BUILD=${BUILD:-build}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0
# NCCL's bootstrap (the unique id) and its socket transport on loopback: the lent machine
# reaches nothing outside itself, and its other interface refuses connections.
export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-lo}
SUMMARY=$OUT/summary.txt
: >"$SUMMARY"
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$SUMMARY"; }

# 1. build (gpu_check.sh writes its own summary and env into a scratch folder)
OUT="$OUT/.check" bash scripts/gpu_check.sh build >"$OUT/build.log" 2>&1
rc=$?
cat "$OUT/.check/env.txt" >"$OUT/env.txt" 2>/dev/null
[ -f "$OUT/.check/build.log" ] && cat "$OUT/.check/build.log" >>"$OUT/build.log"
rm -rf "$OUT/.check"
if [ $rc -ne 0 ] || [ ! -x "$BUILD/test_collectives" ]; then
  row "build" "FAILED (rc $rc, see build.log)"
else
  row "build" "ok"
fi
# gpu_check.sh's library path for the carried oneDNN
[ -d "$ROOT/.deps/usr" ] && export LD_LIBRARY_PATH="$ROOT/.deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$ROOT/.deps/ocl/usr/lib/x86_64-linux-gnu" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$ROOT/.deps/ocl/usr/lib/x86_64-linux-gnu"
[ -d /usr/local/cuda/bin ] && export PATH="/usr/local/cuda/bin:$PATH"
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
row "gpus" "$NGPU"

# launch2 <label> <log> <cmd...>: the command as 2 processes, ranks 0 and 1 on GPUs 0 and 1,
# with a fresh id file; 300 s at most; prints each rank's exit status.
launch2() {
  local label=$1 log=$2; shift 2
  local id="$OUT/id.$$.$RANDOM" pids=() r rc=0
  rm -f "$id"
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r NEATML_INIT_FILE="$id" \
      timeout 300 "$@" --init-file "$id" >"$log.rank$r" 2>&1 &
    pids+=($!)
  done
  for r in 0 1; do wait "${pids[$r]}" || rc=$?; done
  rm -f "$id" "$id.tmp" "$id.spare" "$id.spare.tmp"
  { echo "== $label"; cat "$log.rank0" "$log.rank1"; } >>"$OUT/$log"
  rm -f "$log.rank0" "$log.rank1"
  return $rc
}

# result <label> <log>: the ranks' closing lines of the last run in the log
result() {
  local lines
  lines=$(awk -v l="== $1" '$0==l{f=1;next} /^== /{f=0} f' "$OUT/$2" | grep -E '^collectives-rank[01]: ' | sed 's/^collectives-//' | tr '\n' ' ')
  echo "${lines:-no result line (crashed? see $2)}"
}

if [ "$NGPU" -lt 2 ]; then
  row "collectives on NCCL" "SKIP: $NGPU GPU(s), 2 needed"
else
  : >"$OUT/dist.log"
  launch2 "2 processes" dist.log "$BUILD/test_collectives" --backend cuda
  row "collectives, 2 processes (rc $?)" "$(result '2 processes' dist.log)"
  NEATML_CUDA_GRAPHS=1 launch2 "2 processes, NEATML_CUDA_GRAPHS=1" dist.log "$BUILD/test_collectives" --backend cuda
  row "collectives, CUDA graphs (rc $?)" "$(result '2 processes, NEATML_CUDA_GRAPHS=1' dist.log)"
  NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 launch2 "2 processes, sockets" dist.log "$BUILD/test_collectives" --backend cuda
  row "collectives, sockets (P2P/SHM off) (rc $?)" "$(result '2 processes, sockets' dist.log)"

  # 3. compute-sanitizer
  if command -v compute-sanitizer >/dev/null; then
    : >"$OUT/sanitizer.log"
    # --report-api-errors no: NCCL probes its kernels with cudaFuncGetAttributes and
    # expects some to fail (cudaErrorNoKernelImageForDevice); memory errors are still caught.
    launch2 "memcheck" sanitizer.log compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 \
      "$BUILD/test_collectives" --backend cuda
    row "compute-sanitizer memcheck (rc $?)" "$(grep -m1 -E 'ERROR SUMMARY' "$OUT/sanitizer.log" || echo 'no summary')"
  else
    row "compute-sanitizer" "SKIP: not found"
  fi

  # 4. bandwidth
  : >"$OUT/bench.txt"
  launch2 "neatml bench" bench.txt "$BUILD/test_collectives" --backend cuda --bench 64,256
  row "bench neatml (rc $?)" "see below"
  if [ -x "$BUILD/nccl_peer" ]; then
    # nccl_peer takes --init-file first, then the sizes
    id="$OUT/id.peer.$$"; rm -f "$id"
    for r in 0 1; do
      RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r timeout 300 "$BUILD/nccl_peer" --init-file "$id" 64 256 \
        >"$OUT/peer.rank$r" 2>&1 &
    done
    wait
    { echo "== nccl_peer"; cat "$OUT/peer.rank0" "$OUT/peer.rank1"; } >>"$OUT/bench.txt"
    rm -f "$OUT/peer.rank0" "$OUT/peer.rank1" "$id" "$id.tmp"
  else
    row "bench nccl_peer" "SKIP: build/nccl_peer not built (NCCL not found?)"
  fi
  grep -E '^(neatml|nccl) allreduce' "$OUT/bench.txt" | while read -r line; do
    row "$(cut -d' ' -f1-4 <<<"$line")" "$(cut -d' ' -f5- <<<"$line")"
  done
fi

# final <log> <label>: the example's final line (rank 0's) of a run in the log
final() {
  awk -v l="== $2" '$0==l{f=1;next} /^== /{f=0} f' "$OUT/$1" | grep -m1 '^final ' || echo "no final line (see $1)"
}
# steady_per_gpu <log> <label> <ranks>: steady_images_per_s of that run / ranks
steady_per_gpu() {
  final "$1" "$2" | sed -n 's/.*steady_images_per_s=\([0-9.]*\).*/\1/p' | awk -v n="$3" '{printf "%.1f", $1 / n}'
}

DATA=/usr/share/datasets/fashion-mnist
[ -d "$ROOT/.gpu/fashion-mnist" ] && DATA=$ROOT/.gpu/fashion-mnist
if [ "$NGPU" -lt 2 ] || [ ! -x "$BUILD/fashion_mnist" ] || [ ! -f "$DATA/train-images-idx3-ubyte.gz" ]; then
  row "fashion_mnist data-parallel" "SKIP: $NGPU GPU(s), $BUILD/fashion_mnist, data in $DATA"
else
  # 5. the example on 2 GPUs: 2 processes, then one process with --devices 2
  FM=("$BUILD/fashion_mnist" --backend cuda --data "$DATA" --plot /tmp/fashion_mnist_dist.svg)
  launch2 "fashion_mnist 2 processes" dist.log "${FM[@]}" --epochs 5
  row "fashion_mnist 2 processes (rc $?)" "$(final dist.log 'fashion_mnist 2 processes')"
  # the OCaml example (carried in .gpu/ by gpu_pack.sh, linked to build/'s library)
  if [ -x "$ROOT/.gpu/fashion_mnist_ocaml.exe" ]; then
    export LD_LIBRARY_PATH="$ROOT/$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    launch2 "OCaml fashion_mnist 2 processes" dist.log "$ROOT/.gpu/fashion_mnist_ocaml.exe" \
      --backend cuda --data "$DATA" --epochs 5
    row "OCaml fashion_mnist 2 processes (rc $?)" "$(final dist.log 'OCaml fashion_mnist 2 processes')"
  fi
  { echo "== fashion_mnist --devices 2"; timeout 300 "${FM[@]}" --epochs 5 --devices 2 2>&1; \
    echo "exit $?"; } >>"$OUT/dist.log"
  row "fashion_mnist --devices 2" "$(final dist.log 'fashion_mnist --devices 2')"

  # 6. weak scaling, 128 images per GPU: the example for 1 epoch on 1 GPU, on 2 processes
  { echo "== lenet 1 GPU"; timeout 300 "${FM[@]}" --epochs 1 2>&1; } >>"$OUT/bench.txt"
  launch2 "lenet 2 GPUs" bench.txt "${FM[@]}" --epochs 1
  row "LeNet neatml images/s per GPU, 1 GPU" "$(steady_per_gpu bench.txt 'lenet 1 GPU' 1)"
  row "LeNet neatml images/s per GPU, 2 GPUs" "$(steady_per_gpu bench.txt 'lenet 2 GPUs' 2)"
  if python3 -c 'import torch' 2>/dev/null; then
    echo "== ddp_lenet" >>"$OUT/bench.txt"
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29531 timeout 300 python3 bench/ddp_lenet.py --worlds 1,2 \
      >>"$OUT/bench.txt" 2>&1
    for w in 1 2; do
      line=$(grep -m1 "^ddp_lenet world=$w " "$OUT/bench.txt" | sed 's/^ddp_lenet //')
      row "LeNet PyTorch DDP images/s per GPU, $w GPU" "${line:-no line (see bench.txt)}"
    done
  else
    row "LeNet PyTorch DDP" "SKIP: python3 has no torch"
  fi
fi
echo
echo "== summary ($OUT/summary.txt)"
cat "$SUMMARY"
