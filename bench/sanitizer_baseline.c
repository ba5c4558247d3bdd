/*
 * sanitizer_baseline.c — what compute-sanitizer reports on NVIDIA's own GEMM kernels, with no
 * neatml code in the process: the baseline against which the reports of neatml's suite are
 * read (scripts/gpu_check.sh runs it under each tool beside the tests; docs/RELIABILITY.md).
 *
 * cuBLASLt GEMMs of the kinds neatml issues, each into an output that only the GEMM writes
 * (allocated, never set), then copied to the host and checked against a float64 product:
 * C = A B, N x N x N, in (1) float32 with CUBLAS_COMPUTE_32F (on the H200 SIMT kernels), for
 * N = 256, 1023 and 509 (odd: alignment-1 kernels), (2) bf16 and (3) f16 with float32
 * accumulation, N = 256 (tensor cores: TMA loads and stores). A report under initcheck, racecheck or synccheck here is about the library's
 * kernel or the tool, not about neatml.
 *   usage: sanitizer_baseline      (prints one line per GEMM and "baseline: N failed")
 */
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            printf("FAIL %s:%d: ", __FILE__, __LINE__), printf(__VA_ARGS__), printf("\n");         \
            failed++;                                                                              \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Values exact in bf16 and f16: small multiples of 1/8. */
static float val(int i) { return (float)((i * 37 % 17) - 8) / 8.0f; }

/* Conversions of the values used here (the inputs exact in both formats). */
static uint16_t f16_bits(float f) {
    if (f == 0) return 0;
    int e;
    float m = frexpf(fabsf(f), &e); /* |f| = m 2^e, m in [0.5, 1): normal in f16 here */
    return (uint16_t)((f < 0) << 15 | (e - 1 + 15) << 10 | ((uint32_t)ldexpf(m, 11) & 0x3ff));
}

static float f16_value(uint16_t h) {
    int e = h >> 10 & 0x1f, m = h & 0x3ff;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? INFINITY
                        : ldexpf((float)(m | 0x400), e - 25);
    return h >> 15 ? -v : v;
}

static void to_type(const float *f, void *out, cudaDataType_t t, int n) {
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &f[i], 4);
        if (t == CUDA_R_32F) ((float *)out)[i] = f[i];
        if (t == CUDA_R_16BF) ((uint16_t *)out)[i] = (uint16_t)(u >> 16); /* exact: truncation */
        if (t == CUDA_R_16F) ((uint16_t *)out)[i] = f16_bits(f[i]);
    }
}

static float from_type(const void *p, cudaDataType_t t, int i) {
    if (t == CUDA_R_16BF) {
        uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    if (t == CUDA_R_16F) return f16_value(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* C = A B, N x N x N, in type t; checked on the host. */
static void gemm(cublasLtHandle_t lt, cudaDataType_t t, const char *name, int N, void *ws,
                 size_t wssize) {
    size_t es = t == CUDA_R_32F ? 4 : 2, bytes = (size_t)N * N * es;
    float *fa = malloc(N * N * sizeof *fa), *fb = malloc(N * N * sizeof *fb);
    void *ha = malloc(bytes), *hb = malloc(bytes), *hc = malloc(bytes);
    for (int i = 0; i < N * N; i++) fa[i] = val(i), fb[i] = val(i + 5);
    to_type(fa, ha, t, N * N), to_type(fb, hb, t, N * N);
    void *a, *b, *c;
    CHECK(cudaMalloc(&a, bytes) == cudaSuccess && cudaMalloc(&b, bytes) == cudaSuccess &&
              cudaMalloc(&c, bytes) == cudaSuccess,
          "%s: cudaMalloc", name);
    cudaMemcpy(a, ha, bytes, cudaMemcpyHostToDevice);
    cudaMemcpy(b, hb, bytes, cudaMemcpyHostToDevice);
    /* row-major C = A B is column-major C^T = B^T A^T: the B buffer first */
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayoutCreate(&la, t, N, N, N);
    cublasLtMatrixLayoutCreate(&lb, t, N, N, N);
    cublasLtMatrixLayoutCreate(&lc, t, N, N, N);
    cublasLtMatmulPreference_t pref;
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wssize,
                                         sizeof wssize);
    cublasLtMatmulHeuristicResult_t h;
    int got = 0;
    cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(lt, op, lb, la, lc, lc, pref, 1, &h, &got);
    CHECK(s == CUBLAS_STATUS_SUCCESS && got == 1, "%s: no cuBLASLt algorithm (%d)", name, (int)s);
    const float one = 1.0f, zero = 0.0f;
    s = cublasLtMatmul(lt, op, &one, b, lb, a, la, &zero, c, lc, c, lc, &h.algo, ws, wssize, 0);
    CHECK(s == CUBLAS_STATUS_SUCCESS, "%s: cublasLtMatmul (%d)", name, (int)s);
    CHECK(cudaMemcpy(hc, c, bytes, cudaMemcpyDeviceToHost) == cudaSuccess, "%s: copy", name);
    int bad = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double want = 0;
            for (int k = 0; k < N; k++) want += (double)fa[i * N + k] * fb[k * N + j];
            /* exact in float32 (multiples of 1/64, |sum| < 2^14); one rounding in 16 bits */
            double tol = t == CUDA_R_32F ? 0 : fabs(want) * (t == CUDA_R_16BF ? 0x1p-8 : 0x1p-11);
            if (fabs(from_type(hc, t, i * N + j) - want) > tol) bad++;
        }
    printf("%s: %dx%dx%d, %d of %d elements wrong\n", name, N, N, N, bad, N * N);
    if (bad) failed++;
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la), cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc), cublasLtMatmulDescDestroy(op);
    cudaFree(a), cudaFree(b), cudaFree(c);
    free(fa), free(fb), free(ha), free(hb), free(hc);
}

int main(void) {
    cublasLtHandle_t lt;
    if (cublasLtCreate(&lt) != CUBLAS_STATUS_SUCCESS) {
        printf("baseline: 0 passed, 0 failed, 1 skipped (no GPU: cublasLtCreate failed)\n");
        return 0;
    }
    size_t wssize = 32u << 20;
    void *ws = NULL;
    if (cudaMalloc(&ws, wssize) != cudaSuccess) return 1;
    cudaMemset(ws, 0, wssize);
    /* square, then odd sizes (cuBLAS's alignment-1 SIMT kernels, e.g. cutlass_80_simt_sgemm_*_align1) */
    static const int sizes[] = {256, 1023, 509};
    for (int i = 0; i < 3; i++)
        gemm(lt, CUDA_R_32F, "float32 GEMM (cuBLASLt, COMPUTE_32F)", sizes[i], ws, wssize);
    gemm(lt, CUDA_R_16BF, "bf16 GEMM (cuBLASLt, COMPUTE_32F)", 256, ws, wssize);
    gemm(lt, CUDA_R_16F, "f16 GEMM (cuBLASLt, COMPUTE_32F)", 256, ws, wssize);
    int runs = 5;
    cudaFree(ws);
    cublasLtDestroy(lt);
    printf("baseline: %d passed, %d failed, 0 skipped\n", runs - failed, failed);
    return failed != 0;
}
