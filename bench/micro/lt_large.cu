/*
 * lt_large.cu — cuBLASLt's heuristic candidates for the benchmark's matmul_large (8192^3) in
 * f16 and bf16 (16-bit in and out, float32 compute, as matmul.cu asks), each timed (median of
 * REPS after a warm-up, CUDA events): once with every reduction scheme allowed, once with
 * COMPUTE_TYPE only (what matmul.cu asks for half outputs since f0a2880). For explaining
 * matmul_large_f16 against PyTorch. Not part of the build; on a CUDA machine:
 *   nvcc -O2 -std=c++17 -arch=sm_90 bench/micro/lt_large.cu -lcublasLt -o /tmp/ltl && /tmp/ltl
 */
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

#define REPS 10

int main() {
    const int M = 8192, N = 8192, K = 8192;
    cublasLtHandle_t lt;
    cublasLtCreate(&lt);
    void *da, *db, *dc, *ws;
    size_t wsz = 64 << 20;
    cudaMalloc(&da, (size_t)M * K * 2);
    cudaMalloc(&db, (size_t)K * N * 2);
    cudaMalloc(&dc, (size_t)M * N * 2);
    cudaMalloc(&ws, wsz);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int dt = 0; dt < 2; dt++) {
        cudaDataType_t t = dt ? CUDA_R_16BF : CUDA_R_16F;
        { /* random values of magnitude 0.5..1, either sign (f16: 10 mantissa bits, bf16: 7);
           * constant data runs faster (less switching power, higher clocks) */
            std::vector<uint16_t> h((size_t)M * K);
            unsigned s = 12345;
            for (auto &v : h) {
                s = s * 1664525u + 1013904223u;
                v = dt ? (uint16_t)(0x3f00 | ((s >> 9) & 0x7f) | ((s >> 8) & 0x8000))
                       : (uint16_t)(0x3800 | ((s >> 9) & 0x3ff) | ((s >> 8) & 0x8000));
            }
            cudaMemcpy(da, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
            cudaMemcpy(db, h.data(), h.size() * 2, cudaMemcpyHostToDevice);
        }
        cublasLtMatmulDesc_t d;
        cublasLtMatmulDescCreate(&d, CUBLAS_COMPUTE_32F, CUDA_R_32F);
        cublasLtMatrixLayout_t la, lb, lc;
        cublasLtMatrixLayoutCreate(&la, t, M, K, M);
        cublasLtMatrixLayoutCreate(&lb, t, K, N, K);
        cublasLtMatrixLayoutCreate(&lc, t, M, N, M);
        std::vector<uint16_t> ref, out((size_t)M * N);
        for (int masked = 1; masked >= 0; masked--) { /* masked first: its first is the reference */
            cublasLtMatmulPreference_t p;
            cublasLtMatmulPreferenceCreate(&p);
            cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsz,
                                                 sizeof wsz);
            if (masked) {
                uint32_t m = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
                cublasLtMatmulPreferenceSetAttribute(p, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                     &m, sizeof m);
            }
            cublasLtMatmulHeuristicResult_t r[16];
            int found = 0;
            cublasLtMatmulAlgoGetHeuristic(lt, d, la, lb, lc, lc, p, 16, r, &found);
            printf("%s, %s: %d candidates\n", dt ? "bf16" : "f16",
                   masked ? "reduction COMPUTE_TYPE only" : "any reduction", found);
            for (int i = 0; i < found; i++) {
                int32_t splitk = 0, id = 0, tile = 0, stages = 0, cluster = 0, inner = 0;
                uint32_t swz = 0, custom = 0;
                uint32_t red = 0;
                size_t w;
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_ID, &id,
                                                     sizeof id, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_TILE_ID,
                                                     &tile, sizeof tile, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_STAGES_ID,
                                                     &stages, sizeof stages, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo,
                                                     CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID,
                                                     &cluster, sizeof cluster, &w);
                cublasLtMatmulAlgoConfigGetAttribute(
                    &r[i].algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID, &inner, sizeof inner, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING,
                                                     &swz, sizeof swz, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION,
                                                     &custom, sizeof custom, &w);
                cublasLtMatmulAlgoConfigGetAttribute(&r[i].algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM,
                                                     &splitk, sizeof splitk, &w);
                cublasLtMatmulAlgoConfigGetAttribute(
                    &r[i].algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, &red, sizeof red, &w);
                float one = 1, zero = 0;
                std::vector<float> ms;
                cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
                for (int k = 0; k < REPS + 2 && st == CUBLAS_STATUS_SUCCESS; k++) {
                    cudaEventRecord(e0, 0);
                    st = cublasLtMatmul(lt, d, &one, da, la, db, lb, &zero, dc, lc, dc, lc,
                                        &r[i].algo, ws, wsz, 0);
                    cudaEventRecord(e1, 0);
                    cudaEventSynchronize(e1);
                    float x = 0;
                    cudaEventElapsedTime(&x, e0, e1);
                    if (k >= 2) ms.push_back(x);
                }
                double med = 0;
                if (st == CUBLAS_STATUS_SUCCESS) {
                    std::sort(ms.begin(), ms.end());
                    med = ms[ms.size() / 2];
                }
                /* against the masked first candidate's output: elements more than 1 ulp apart
                 * (float32 sums in another order stay within 1 ulp of a 16-bit result), over the first
                 * 2^24 elements */
                long far = -1;
                double worst = 0;
                if (st == CUBLAS_STATUS_SUCCESS &&
                    cudaMemcpy(out.data(), dc, out.size() * 2, cudaMemcpyDeviceToHost) ==
                        cudaSuccess) {
                    if (ref.empty()) ref = out;
                    far = 0;
                    for (size_t e = 0; e < ((size_t)1 << 24); e++) { /* the first 2048 columns */
                        float a = dt ? __bfloat162float(*(__nv_bfloat16 *)&out[e])
                                     : __half2float(*(__half *)&out[e]);
                        float b = dt ? __bfloat162float(*(__nv_bfloat16 *)&ref[e])
                                     : __half2float(*(__half *)&ref[e]);
                        double ulp =
                            std::ldexp(1.0, std::ilogb(std::fabs(b) > 1e-3 ? std::fabs(b) : 1e-3) -
                                                (dt ? 7 : 10));
                        double u = std::fabs((double)a - b) / ulp;
                        if (u > 1.0) far++;
                        if (u > worst) worst = u;
                    }
                }
                printf(
                    "  cand %2d: algo %d tile %d stages %d cluster %d inner %d swizzle %u custom "
                    "%u splitK %d reduction %u: status %d %.3f ms (%.0f TFLOP/s); vs reference: "
                    "%ld elements beyond 1 ulp, worst %.1f ulp\n",
                    i, id, tile, stages, cluster, inner, swz, custom, splitk, red, (int)st, med,
                    med > 0 ? 2.0 * M * N * K / (med * 1e9) : 0.0, far, worst);
            }
            cublasLtMatmulPreferenceDestroy(p);
        }
        cublasLtMatrixLayoutDestroy(la);
        cublasLtMatrixLayoutDestroy(lb);
        cublasLtMatrixLayoutDestroy(lc);
        cublasLtMatmulDescDestroy(d);
    }
    return 0;
}
