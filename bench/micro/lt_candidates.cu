/*
 * lt_candidates.cu — every cuBLASLt heuristic candidate for an f16 GEMM of test_dtype's
 * shape (31x29x130, f16 in and out, float32 compute), run and checked against the float64
 * result of the same f16 inputs: its split-K and reduction scheme, and how many elements
 * are more than 1 ulp of f16 from the exact value. Once with every reduction scheme
 * allowed, once with COMPUTE_TYPE only (what matmul.cu asks for half outputs). Not part of
 * the build; on a CUDA machine:
 *   nvcc -O2 -std=c++17 -arch=sm_90 bench/micro/lt_candidates.cu -lcublasLt -o /tmp/ltc && /tmp/ltc
 */
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cstdio>
#include <cmath>
#include <vector>
int main() {
    const int M = 29, N = 31, K = 130; // column-major: C (M x N) = A (M x K) * B (K x N)
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    std::vector<__half> a(M * K), b(K * N);
    std::vector<double> ref(M * N, 0);
    unsigned s = 12345;
    auto rnd = [&] {
        s = s * 1664525u + 1013904223u;
        return ((s >> 8) & 0xffff) / 32768.0 - 1.0;
    };
    for (auto &v : a) v = __float2half((float)rnd());
    for (auto &v : b) v = __float2half((float)rnd());
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double t = 0;
            for (int k = 0; k < K; k++)
                t += (double)__half2float(a[i + k * M]) * (double)__half2float(b[k + j * K]);
            ref[i + j * M] = t;
        }
    __half *da, *db, *dc;
    void *ws;
    size_t wsz = 32 << 20;
    cudaMalloc(&da, a.size() * 2);
    cudaMalloc(&db, b.size() * 2);
    cudaMalloc(&dc, M * N * 2);
    cudaMalloc(&ws, wsz);
    cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b.data(), b.size() * 2, cudaMemcpyHostToDevice);
    cublasLtMatmulDesc_t d;
    cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayout_t la, lb, lc;
    cublasLtMatrixLayoutCreate(&la, CUDA_R_16F, M, K, M);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_16F, K, N, K);
    cublasLtMatrixLayoutCreate(&lc, CUDA_R_16F, M, N, M);
    for (int masked = 0; masked < 2; masked++) {
        cublasLtMatmulPreference_t p;
        cublasLtMatmulPreferenceCreate(&p);
        cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz,
                                             sizeof wsz);
        if (masked) {
            uint32_t m = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
            cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, &m,
                                                 sizeof m);
        }
        cublasLtMatmulHeuristicResult_t r[32];
        int found = 0;
        cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, lc, lc, p, 32, r, &found);
        printf("%s: %d candidates\n", masked ? "mask COMPUTE_TYPE" : "no mask", found);
        for (int i = 0; i < found; i++) {
            int32_t splitk = 0;
            uint32_t red = 0;
            size_t w;
            cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                 &splitk, sizeof splitk, &w);
            cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME,
                                                 &red, sizeof red, &w);
            float one = 1, zero = 0;
            cudaMemset(dc, 0, M * N * 2);
            cublasStatus_t st = cublasLtMatmul(lt, d, &one, da, la, db, lb, &zero, dc, lc, dc, lc,
                                               &r[i].algo, ws, wsz, 0);
            cudaDeviceSynchronize();
            std::vector<__half> c(M * N);
            cudaMemcpy(c.data(), dc, M * N * 2, cudaMemcpyDeviceToHost);
            int bad = 0;
            double worst = 0;
            for (int e = 0; e < M * N; e++) {
                double got = __half2float(c[e]), want = __half2float(__float2half((float)ref[e]));
                double ulp = std::ldexp(
                    1.0, std::ilogb(std::fabs(want) > 6.1e-5 ? std::fabs(want) : 6.1e-5) - 10);
                double err = std::fabs(got - ref[e]) / ulp;
                if (err > 1.0) bad++;
                if (err > worst) worst = err;
            }
            printf("  cand %2d: status %d splitK %d reduction %u: %d of %d beyond 1 ulp of the "
                   "exact result, worst %.2f ulp\n",
                   i, (int)st, splitk, red, bad, M * N, worst);
        }
        cublasLtMatmulPreferenceDestroy(p);
    }
    return 0;
}
