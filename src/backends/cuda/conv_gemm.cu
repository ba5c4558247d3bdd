/*
 * conv_gemm.cu — the backward-filter convolution of strict float32 as a batched GEMM of
 * neatml's own (im2col), one more candidate for conv_plan.cu's timing beside cuDNN's
 * algorithms.
 *
 * Why: strict float32 takes only cuDNN's GEMM-like algorithms (exact products, float32
 * sums: conv_plan.cu, gemm_like), and their backward-filter kernels reduce the N x P x Q
 * terms of each weight in few blocks: on the H200, LeNet's conv2 (x 128x32x14x14, 64
 * filters 3x3) took 0.258 ms for dw where cuDNN's FFT algorithm took 0.044 and TF32 0.044
 * (bench/micro/conv_parts.c, 2026-11-30).
 *
 * How, for groups == 1 (any stride, padding, dilation):
 *   col[n] [C*R*S, P*Q] = the input windows of image n (im2col_kernel; 0 in the padding),
 *   part[n] [K, C*R*S]  = dz[n] [K, P*Q] col[n]^T   (one strided batched cuBLASLt GEMM over
 *                          n, strict float32: FMA products, float32 sums),
 *   dw = the sum over n of part[n] in order (+ beta dw)  (sum_parts_kernel).
 * Every term is an exact product summed in float32, the bound of the other strict paths, and
 * the same bits at every replay (between processes, as the GEMM's timed choice allows). The
 * workspace holds col and part (cuda_conv_gemm_wgrad_ws).
 * Tried and dropped (H200, 2026-11-30): one GEMM of depth N*P*Q over col [C*R*S, N*P*Q] and
 * dz transposed to [K, N*P*Q], cuBLASLt splitting the depth: slower on every shape of
 * bench/micro/conv_parts.c (LeNet's conv2 b128 0.129 against 0.109 ms, conv1 0.079 against
 * 0.054, the 256-filter conv 1.30 against 1.23).
 */
#include "common.cuh"

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

/* col[n][c][r][s][p][q] = x[n][c][p sh - ph + r dh][q sw - pw + s dw], 0 outside x. */
__global__ void im2col_kernel(const float *__restrict__ x, int64_t total, int c, int h, int w,
                              int kh, int kw, int p, int q, int sh, int sw, int ph, int pw, int dh,
                              int dw, float *__restrict__ col) {
    cuda_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = i;
        int qq = (int)(t % q);
        t /= q;
        int pp = (int)(t % p);
        t /= p;
        int ss = (int)(t % kw);
        t /= kw;
        int rr = (int)(t % kh);
        t /= kh;
        int cc = (int)(t % c);
        int64_t nn = t / c;
        int hi = pp * sh - ph + rr * dh, wi = qq * sw - pw + ss * dw;
        col[i] =
            hi >= 0 && hi < h && wi >= 0 && wi < w ? x[((nn * c + cc) * h + hi) * w + wi] : 0.0f;
    }
}

/* dw[i] = part[0][i] + part[1][i] + ... in that order, + beta dw[i] (dw not read when beta
 * is 0). Not reduce.cu's cuda_sum3: conv_plan.cu's timing runs this path outside a command
 * buffer, where cuda_sum3's scratch slots do not exist. */
__global__ void sum_parts_kernel(const float *__restrict__ part, int64_t batch, int64_t len,
                                 float beta, float *dw) {
    cuda_pdl_enter();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < len;
         i += (int64_t)gridDim.x * blockDim.x) {
        float acc = 0.0f;
        for (int64_t n = 0; n < batch; n++) acc += part[n * len + i];
        dw[i] = beta != 0.0f ? acc + beta * dw[i] : acc;
    }
}

extern "C" {

size_t cuda_conv_gemm_wgrad_ws(const nm_conv_geom *g) {
    /* col N*C*R*S*P*Q floats and part N*K*C*R*S; SIZE_MAX when that does not fit a size_t (a
     * huge kernel over heavy padding): then never offered */
    const int64_t col_dims[] = {g->n, g->c, g->kh, g->kw, g->p, g->q, (int64_t)sizeof(float)};
    const int64_t part_dims[] = {g->n, g->k, g->c, g->kh, g->kw, (int64_t)sizeof(float)};
    size_t col = 1, part = 1;
    for (int i = 0; i < 7; i++)
        if (__builtin_mul_overflow(col, (size_t)col_dims[i], &col)) return SIZE_MAX;
    for (int i = 0; i < 6; i++)
        if (__builtin_mul_overflow(part, (size_t)part_dims[i], &part)) return SIZE_MAX;
    if (col > SIZE_MAX / 4 || part > SIZE_MAX / 4) return SIZE_MAX;
    return align256(col) + align256(part);
}

neat_status cuda_conv_gemm_wgrad(nm_device *dev, const nm_conv_geom *g, const float *x,
                                 const float *dz, float beta, float *dw, void *ws,
                                 const char *what) {
    if (g->groups != 1)
        return nm_error(NEAT_ERR_INTERNAL, "%s: the im2col backward filter takes one group", what);
    int64_t crs = g->c * g->kh * g->kw, pq = g->p * g->q, nw = g->k * crs;
    if (nw == 0) return NEAT_OK;
    if (g->n == 0 || pq == 0) /* no terms: dw = beta dw */
        return beta == 0.0f   ? cuda_fill_f32(dev, dw, nw, 0.0f, what)
               : beta != 1.0f ? cuda_scale_f32(dev, dw, beta, dw, nw, what)
                              : NEAT_OK;
    int64_t total = g->n * crs * pq;
    float *col = (float *)ws;
    float *part = (float *)((char *)ws + align256((size_t)total * sizeof(float)));
    cuda_launch(dev, im2col_kernel, cuda_grid(dev, total), CUDA_THREADS, x, total, (int)g->c,
                (int)g->h, (int)g->w, (int)g->kh, (int)g->kw, (int)g->p, (int)g->q, (int)g->sh,
                (int)g->sw, (int)g->ph, (int)g->pw, (int)g->dh, (int)g->dw, col);
    neat_status st = cuda_launched(what, "im2col_kernel");
    if (!st)
        st = cuda_gemm(dev, NEAT_MATH_STRICT, 0, 1, g->n, g->k, crs, pq, 1.0f, dz, col, 0.0f, part,
                       CUBLASLT_EPILOGUE_DEFAULT, NULL, what);
    if (st) return st;
    cuda_launch(dev, sum_parts_kernel, cuda_grid(dev, nw), CUDA_THREADS, part, g->n, nw, beta, dw);
    return cuda_launched(what, "sum_parts_kernel");
}

} /* extern "C" */
