/*
 * nccl_peer.c — NCCL's own all-reduce bus bandwidth, measured as neatml's is (test_collectives
 * --bench): float32 SUM of `MiB` per rank in place on one stream, timed with CUDA events
 * around `iters` back-to-back calls after `warmup`, the median of `reps` such runs; bus
 * bandwidth = bytes * 2 (n - 1) / n / time (nccl-tests' definition). Built only when NCCL is
 * found (CMakeLists.txt); not part of neatml_bench.
 *
 *   one process per GPU: RANK, WORLD_SIZE, LOCAL_RANK and --init-file FILE (rank 0 writes
 *   the id), then: nccl_peer --init-file FILE 64 256
 */
#include <cuda_runtime.h>
#include <nccl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(call, what)                                                                          \
    do {                                                                                           \
        if (!(call)) {                                                                             \
            fprintf(stderr, "nccl_peer: %s failed\n", what);                                       \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : dflt;
}

int main(int argc, char **argv) {
    int rank = env_int("RANK", 0), world = env_int("WORLD_SIZE", 1),
        local = env_int("LOCAL_RANK", rank);
    const char *file = NULL;
    int first = 1;
    if (argc > 2 && !strcmp(argv[1], "--init-file")) file = argv[2], first = 3;
    CHECK(file || world == 1, "--init-file");
    CHECK(cudaSetDevice(local) == cudaSuccess, "cudaSetDevice");
    ncclUniqueId id;
    if (rank == 0) {
        CHECK(ncclGetUniqueId(&id) == ncclSuccess, "ncclGetUniqueId");
        if (file) {
            char tmp[4096];
            snprintf(tmp, sizeof tmp, "%s.tmp", file);
            FILE *f = fopen(tmp, "wb");
            CHECK(f && fwrite(&id, sizeof id, 1, f) == 1 && fclose(f) == 0 &&
                      rename(tmp, file) == 0,
                  "writing the id");
        }
    } else {
        int got = 0;
        for (int i = 0; i < 6000 && !got; i++) {
            FILE *f = fopen(file, "rb");
            if (f) got = fread(&id, sizeof id, 1, f) == 1, fclose(f);
            if (!got) usleep(10000);
        }
        CHECK(got, "reading the id");
    }
    ncclComm_t comm;
    CHECK(ncclCommInitRank(&comm, world, id, rank) == ncclSuccess, "ncclCommInitRank");
    cudaStream_t s;
    cudaEvent_t t0, t1;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaEventCreate(&t0), cudaEventCreate(&t1);
    for (int a = first; a < argc; a++) {
        size_t mib = (size_t)atol(argv[a]), n = mib << 18; /* floats */
        float *buf;
        CHECK(cudaMalloc((void **)&buf, n * sizeof(float)) == cudaSuccess, "cudaMalloc");
        cudaMemsetAsync(buf, 0, n * sizeof(float), s);
        enum { warmup = 5, iters = 20, reps = 5 };
        for (int i = 0; i < warmup; i++) ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, comm, s);
        float ms[reps];
        for (int r = 0; r < reps; r++) {
            cudaEventRecord(t0, s);
            for (int i = 0; i < iters; i++)
                ncclAllReduce(buf, buf, n, ncclFloat32, ncclSum, comm, s);
            cudaEventRecord(t1, s);
            CHECK(cudaEventSynchronize(t1) == cudaSuccess, "the all-reduces");
            cudaEventElapsedTime(&ms[r], t0, t1);
        }
        for (int i = 1; i < reps; i++) /* sort: the median */
            for (int j = i; j > 0 && ms[j] < ms[j - 1]; j--) {
                float tmp = ms[j];
                ms[j] = ms[j - 1], ms[j - 1] = tmp;
            }
        double sec = ms[reps / 2] / 1e3 / iters, bytes = (double)n * sizeof(float);
        double busbw = bytes * 2.0 * (world - 1) / world / sec / 1e9;
        if (rank == 0)
            printf("nccl allreduce %zu MiB ranks=%d time_ms=%.3f busbw_GBps=%.1f\n", mib, world,
                   sec * 1e3, busbw);
        cudaFree(buf);
    }
    ncclCommDestroy(comm);
    return 0;
}
