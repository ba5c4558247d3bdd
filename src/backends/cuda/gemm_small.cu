/*
 * gemm_small.cu — neatml's own kernel for small float32 GEMMs whose operands both run along
 * K: C [m, n] = act(alpha A [m, k] B^T + bias), B stored [n, k] (a linear layer's forward,
 * x w^T; conv_gemm.cu's per-image weight gradients, dz[n] col[n]^T), over `batch` such
 * products packed back to back. matmul.cu times it beside cuBLASLt's candidates and runs it
 * where it is faster.
 *
 * Why: cuBLASLt answers a 64x256x256 float32 GEMM (the 700-op MLP's layers) with a split-K
 * kernel and a second kernel that adds its partial sums: two launches for about 10 million
 * flops, each a few microseconds of latency in a replayed graph (ncu: gemm 5.8-6.7 us, its
 * reduction 4.6-5.1 us, each alone). Its one-kernel algorithms use tiles too large for such
 * a product to fill 132 multiprocessors (3.7 us/op instead of 3.3 when forced). Here each
 * warp owns a 4x4 block of C and its lanes split K: lane l multiplies the 16-byte groups l,
 * l + 32, ... of the 4 rows of A and the 4 rows of B (8 loads, 64 fused multiply-adds a
 * step), then the 16 sums go through a butterfly of shuffles; a 64x256 C is 1,024 warps.
 *
 * Arithmetic: float32 products and sums only (never TF32, whatever the math mode: more
 * accurate than TF32 allows), fmaf chains of at most k / 32 terms per lane and a 5-level
 * tree: within the bound of neatml.h's float32 GEMMs, exact on small integers. The xor
 * butterfly leaves the same bits in every lane (each step adds the same two values in
 * either order), so the order of the sums is fixed by m, n and k alone: the same bits run
 * after run. The epilogue is cuBLASLt's: alpha times the sum, plus the bias, then relu or
 * gelu (common.cuh's act_fwd, the formula of the elementwise pass).
 *
 * Fits (cuda_small_gemm_fits): any batch, A [m, k] and B [n, k] row-major
 * (cuBLASLt's transposes: A^T B in its column-major terms), k a multiple of 4 (16-byte
 * loads; every pool block is 256-byte aligned, checked again at the call), at most
 * SMALL_GEMM_MAX_MACS multiply-adds per matrix and SMALL_GEMM_MAX_TOTAL over the batch,
 * float32 in and out, beta = 0, and an epilogue of none,
 * bias, relu, relu + bias, gelu, gelu + bias.
 */
#include "common.cuh"

#include <stdint.h>

#define SG_RM 4                          /* rows of C per warp */
#define SG_RN 4                          /* columns of C per warp */
#define SG_THREADS 128                   /* 4 warps per block */
#define SMALL_GEMM_MAX_MACS (1 << 26)    /* per matrix */
#define SMALL_GEMM_MAX_TOTAL (1ll << 31) /* over the batch */

template <int ACT, bool BIAS>
__global__ void __launch_bounds__(SG_THREADS)
    small_gemm_nt(const float *__restrict__ a, const float *__restrict__ b,
                  const float *__restrict__ bias, float *__restrict__ c, int64_t m, int64_t n,
                  int64_t k, float alpha, int64_t tiles_n, int64_t tiles, int64_t batch) {
    int64_t warp = ((int64_t)blockIdx.x * SG_THREADS + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    cuda_pdl_enter();
    if (warp >= tiles * batch) return; /* the whole warp */
    const int64_t bi = warp / tiles, tile = warp % tiles;
    a += bi * m * k, b += bi * n * k, c += bi * m * n;
    const int64_t i0 = tile / tiles_n * SG_RM, j0 = tile % tiles_n * SG_RN;
    /* rows past the edge read the last row (valid memory); their sums are not stored */
    const float *ar[SG_RM], *br[SG_RN];
#pragma unroll
    for (int r = 0; r < SG_RM; r++) ar[r] = a + min(i0 + r, m - 1) * k;
#pragma unroll
    for (int q = 0; q < SG_RN; q++) br[q] = b + min(j0 + q, n - 1) * k;
    float acc[SG_RM][SG_RN];
#pragma unroll
    for (int r = 0; r < SG_RM; r++)
#pragma unroll
        for (int q = 0; q < SG_RN; q++) acc[r][q] = 0.0f;
    for (int64_t kk = 4 * lane; kk < k; kk += 4 * 32) {
        float4 av[SG_RM], bv[SG_RN];
#pragma unroll
        for (int r = 0; r < SG_RM; r++) av[r] = __ldg(reinterpret_cast<const float4 *>(ar[r] + kk));
#pragma unroll
        for (int q = 0; q < SG_RN; q++) bv[q] = __ldg(reinterpret_cast<const float4 *>(br[q] + kk));
#pragma unroll
        for (int r = 0; r < SG_RM; r++)
#pragma unroll
            for (int q = 0; q < SG_RN; q++) {
                float s = acc[r][q];
                s = fmaf(av[r].x, bv[q].x, s);
                s = fmaf(av[r].y, bv[q].y, s);
                s = fmaf(av[r].z, bv[q].z, s);
                s = fmaf(av[r].w, bv[q].w, s);
                acc[r][q] = s;
            }
    }
    float mine = 0.0f; /* lane r * SG_RN + q keeps C[i0 + r, j0 + q] */
#pragma unroll
    for (int r = 0; r < SG_RM; r++)
#pragma unroll
        for (int q = 0; q < SG_RN; q++) {
            float v = acc[r][q];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == r * SG_RN + q) mine = v;
        }
    if (lane >= SG_RM * SG_RN) return;
    int64_t i = i0 + lane / SG_RN, j = j0 + lane % SG_RN;
    if (i >= m || j >= n) return;
    float v = alpha * mine;
    if (BIAS) v += bias[j];
    c[i * n + j] = act_fwd<ACT>(v);
}

extern "C" int cuda_small_gemm_fits(int64_t batch, int trans_a, int trans_b, int64_t m, int64_t n,
                                    int64_t k, int f32, cublasLtEpilogue_t epilogue) {
    int epi_ok = epilogue == CUBLASLT_EPILOGUE_DEFAULT || epilogue == CUBLASLT_EPILOGUE_BIAS ||
                 epilogue == CUBLASLT_EPILOGUE_RELU || epilogue == CUBLASLT_EPILOGUE_RELU_BIAS ||
                 epilogue == CUBLASLT_EPILOGUE_GELU || epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
    return batch > 0 && !trans_a && trans_b && f32 && epi_ok && m > 0 && n > 0 && k > 0 &&
           k % 4 == 0 && (double)m * n * k <= SMALL_GEMM_MAX_MACS &&
           (double)batch * m * n * k <= SMALL_GEMM_MAX_TOTAL;
}

/* C[i] = act(alpha A[i] B[i]^T + bias), i < batch, on the device's stream; the caller
 * checked the fit (so each A[i], B[i] starts 16 bytes after a multiple: k % 4 == 0). */
extern "C" neat_status cuda_small_gemm(nm_device *dev, int64_t batch, int64_t m, int64_t n,
                                       int64_t k, float alpha, const float *a, const float *b,
                                       const float *bias, float *c, cublasLtEpilogue_t epilogue,
                                       const char *what) {
    if (((uintptr_t)a | (uintptr_t)b) % 16)
        return nm_error(NEAT_ERR_INTERNAL, "%s: small GEMM operands not 16-byte aligned", what);
    int64_t tiles_n = (n + SG_RN - 1) / SG_RN, tiles = (m + SG_RM - 1) / SG_RM * tiles_n;
    unsigned grid = (unsigned)((batch * tiles * 32 + SG_THREADS - 1) / SG_THREADS);
    int relu = epilogue == CUBLASLT_EPILOGUE_RELU || epilogue == CUBLASLT_EPILOGUE_RELU_BIAS;
    if (epilogue != CUBLASLT_EPILOGUE_BIAS && epilogue != CUBLASLT_EPILOGUE_RELU_BIAS &&
        epilogue != CUBLASLT_EPILOGUE_GELU_BIAS)
        bias = NULL; /* cuBLASLt reads the bias pointer only with a bias epilogue */
    int gelu = epilogue == CUBLASLT_EPILOGUE_GELU || epilogue == CUBLASLT_EPILOGUE_GELU_BIAS;
#define SG_LAUNCH(ACT)                                                                             \
    do {                                                                                           \
        if (bias)                                                                                  \
            cuda_launch(dev, small_gemm_nt<ACT, true>, grid, SG_THREADS, a, b, bias, c, m, n, k,   \
                        alpha, tiles_n, tiles, batch);                                             \
        else                                                                                       \
            cuda_launch(dev, small_gemm_nt<ACT, false>, grid, SG_THREADS, a, b, bias, c, m, n, k,  \
                        alpha, tiles_n, tiles, batch);                                             \
    } while (0)
    if (relu)
        SG_LAUNCH(NEAT_ACT_RELU);
    else if (gelu)
        SG_LAUNCH(NEAT_ACT_GELU);
    else
        SG_LAUNCH(NEAT_ACT_NONE);
#undef SG_LAUNCH
    return cuda_launched(what, "small_gemm_nt");
}
