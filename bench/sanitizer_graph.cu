/*
 * sanitizer_graph.cu — a CUDA graph shaped like one of neatml's training steps, with no neatml
 * code in the process: to tell whether a failure seen under compute-sanitizer comes from the
 * library or from the tool (docs/RELIABILITY.md, "test_copy_overlap under two sanitizer
 * processes").
 *
 * The graph, captured once and replayed STEPS times, each replay checked on the host:
 *   x += 1 (a kernel), LONG passes of big = big + 1 over 192 MiB (the "long op" of
 *   test_copy_overlap), then y = x written by a kernel into mapped pinned host memory;
 * in mode "cond" everything after the first kernel sits in the body of a conditional IF node
 * whose condition a one-thread kernel sets from a device flag (as guard.cu does), in mode
 * "plain" the same kernels without the node. Streams, capture mode and node calls are the
 * ones neatml's CUDA backend uses. Options after the mode: "skip" sets the flag before
 * replay SKIP (its body must not run: the host buffer stays untouched), "two" instantiates
 * the graph twice and replays the two alternately (as test_copy_overlap's two buffers).
 *   usage: sanitizer_graph plain|cond [skip] [two]   (prints "sanitizer_graph ...: N failed")
 * Built with the CUDA backend (build/sanitizer_graph). H200, CUDA 13.0, compute-sanitizer
 * 2025.3.1, 2026-12-01: "cond" under two memcheck processes at once failed in one of the two
 * in each of 3 rounds (illegal address; once reads inside an allocation reported out of
 * bounds), "plain" in none; alone, and under racecheck, each mode passed.
 */
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

enum { N = 4096, BIG = 48 << 20, LONG = 8, STEPS = 60, SKIP = 21 };

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

__global__ void add1(float *v, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x)
        v[i] += 1.0f;
}

__global__ void to_host(const float *x, float *mapped, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) mapped[i] = x[i];
}

__global__ void set_if_ok(cudaGraphConditionalHandle h, const int *err) {
    cudaGraphSetConditional(h, *(volatile const int *)err == 0 ? 1u : 0u);
}

/* The step's graph, captured on s (and body_stream for the conditional body). */
static int capture(int cond, cudaStream_t s, cudaStream_t body_stream, float *x, float *big,
                   float *host_dev, const int *err, cudaGraphExec_t *exec) {
    cudaGraph_t graph;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed));
    add1<<<16, 256, 0, s>>>(x, N);
    cudaStream_t t = s;
    if (cond) {
        cudaStreamCaptureStatus status;
        cudaGraph_t g;
        const cudaGraphNode_t *deps;
        size_t ndeps;
        cudaGraphConditionalHandle h;
        CK(cudaStreamGetCaptureInfo(s, &status, NULL, &g, NULL, NULL, NULL));
        CK(cudaGraphConditionalHandleCreate(&h, g, 0, 0));
        set_if_ok<<<1, 1, 0, s>>>(h, err);
        CK(cudaStreamGetCaptureInfo(s, &status, NULL, &g, &deps, NULL, &ndeps));
        cudaGraphNodeParams p = {};
        p.type = cudaGraphNodeTypeConditional;
        p.conditional.handle = h;
        p.conditional.type = cudaGraphCondTypeIf;
        p.conditional.size = 1;
        cudaGraphNode_t node;
        CK(cudaGraphAddNode(&node, g, deps, NULL, ndeps, &p));
        CK(cudaStreamUpdateCaptureDependencies(s, &node, NULL, 1,
                                               cudaStreamSetCaptureDependencies));
        CK(cudaStreamBeginCaptureToGraph(body_stream, p.conditional.phGraph_out[0], NULL, NULL, 0,
                                         cudaStreamCaptureModeRelaxed));
        t = body_stream;
    }
    for (int i = 0; i < LONG; i++) add1<<<1024, 256, 0, t>>>(big, BIG);
    to_host<<<(N + 255) / 256, 256, 0, t>>>(x, host_dev, N);
    if (cond) {
        cudaGraph_t body;
        CK(cudaStreamEndCapture(body_stream, &body));
    }
    CK(cudaStreamEndCapture(s, &graph));
    CK(cudaGraphInstantiate(exec, graph, 0));
    return 0;
}

int main(int argc, char **argv) {
    int cond = argc > 1 && strcmp(argv[1], "cond") == 0, skip = 0, two = 0;
    for (int i = 2; i < argc; i++)
        skip |= strcmp(argv[i], "skip") == 0, two |= strcmp(argv[i], "two") == 0;
    float *x, *big, *host, *host_dev;
    int *err;
    CK(cudaMalloc(&x, N * sizeof(float)));
    CK(cudaMalloc(&big, (size_t)BIG * sizeof(float)));
    CK(cudaMalloc(&err, sizeof(int)));
    CK(cudaMemset(x, 0, N * sizeof(float)));
    CK(cudaMemset(big, 0, (size_t)BIG * sizeof(float)));
    CK(cudaMemset(err, 0, sizeof(int)));
    CK(cudaHostAlloc((void **)&host, N * sizeof(float), cudaHostAllocMapped));
    CK(cudaHostGetDevicePointer((void **)&host_dev, host, 0));
    cudaStream_t s, body_stream;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&body_stream, cudaStreamNonBlocking));

    cudaGraphExec_t exec[2];
    for (int j = 0; j < 1 + two; j++) /* a conditional node's graph instantiates once */
        if (capture(cond, s, body_stream, x, big, host_dev, err, &exec[j])) return 1;

    int failed = 0;
    for (int k = 1; k <= STEPS; k++) {
        int off = cond && skip && k == SKIP; /* the body does not run: host stays -1 */
        for (int i = 0; i < N; i++) host[i] = -1.0f;
        if (off) CK(cudaMemcpy(err, &off, sizeof off, cudaMemcpyHostToDevice));
        CK(cudaGraphLaunch(exec[two ? k & 1 : 0], s));
        CK(cudaStreamSynchronize(s));
        if (off) CK(cudaMemset(err, 0, sizeof(int)));
        int bad = 0;
        for (int i = 0; i < N; i++) bad += host[i] != (off ? -1.0f : (float)k);
        if (bad) printf("FAIL step %d: %d of %d wrong (host[0] %g)\n", k, bad, N, host[0]);
        failed += bad != 0;
    }
    printf("sanitizer_graph %s%s%s: %d failed\n", cond ? "cond" : "plain", skip ? " skip" : "",
           two ? " two" : "", failed);
    return failed != 0;
}
