/*
 * conv_gemm.cu — the backward-filter convolution of strict float32 by neatml's own code, two
 * more candidates for conv_plan.cu's timing beside cuDNN's algorithms: a batched GEMM over
 * im2col (any geometry of one group, NCHW), and a direct kernel for 3x3 stride-1
 * convolutions on small planes in either layout (below, dw3x3_kernel).
 *
 * Why: strict float32 takes only cuDNN's GEMM-like algorithms (exact products, float32
 * sums: conv_plan.cu, gemm_like), and their backward-filter kernels reduce the N x P x Q
 * terms of each weight in few blocks: on the H200, LeNet's conv2 (x 128x32x14x14, 64
 * filters 3x3) took 0.258 ms for dw where cuDNN's FFT algorithm took 0.044 and TF32 0.044
 * (bench/micro/conv_parts.c, 2026-11-30).
 *
 * How, for groups == 1 (any stride, padding, dilation):
 *   col[n] [C*R*S, P*Q] = the input windows of image n (im2col_kernel; 0 in the padding),
 *   part[n] [K, C*R*S]  = dz[n] [K, P*Q] col[n]^T   (one strided batched GEMM over n,
 *                          strict float32: FMA products, float32 sums; cuBLASLt's, or
 *                          gemm_small.cu's where matmul.cu's timing finds it faster),
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

/* ---- the direct backward filter of 3x3 stride-1 convolutions on small planes ------------
 * dw[k][c][r][s] = sum_n sum_p,q dz[n][k][p][q] x[n][c][p + r - ph][q + s - pw], without
 * im2col; in NHWC (NHWC = true) the same sums of x[n][h][w][c], dz[n][p][q][k] into
 * dw[k][r][s][c], only the staging and the final stores differ (below). A block takes DW_KT
 * filters x DW_CT channels, all 9 taps, over a chunk of nb
 * images: per image it stages the DW_CT input planes, zero-padded, and the DW_KT planes of
 * dz in shared memory, then thread (tk, tc) (tc fast: a warp is 32 channels of one group of
 * DW_KR filters) slides a 3x3 window along each row of its channel's plane, 3 new loads a
 * step, and adds the DW_KR x 9 products into its accumulators: 36 fused multiply-adds per
 * 7 shared-memory loads (the window's reads differ by a plane per lane: planes of odd
 * length keep them in distinct banks; dz's are the same address for the warp). The staged
 * channels of an image are one contiguous run of x, copied element by element into the
 * planes' interiors (the padding is zeroed once); in NHWC a pixel's channels are the run,
 * pixels C apart, and a pixel's DW_KT filters of dz likewise. The chunk's sums go to
 * part[chunk] in dw's layout, which sum_parts_kernel adds in chunk order: every term an exact
 * product, sums in float32 in an order fixed by the shape (nb from the shape alone), exact
 * on small integers. H200, 2026-11-30 21:52 UTC (bench/micro/conv_parts.c), LeNet's conv2
 * (x 128x32x14x14, 64 filters): dw 0.107 ms by the im2col GEMM, 0.104 with a first version
 * of this kernel that staged x through three divisions per element, 0.059 now (blocks aimed
 * at: 256 0.064, 512 0.059, 1024 0.059); at batch 1024 0.779 -> 0.365 (cuDNN's 0.704). */
#define DW_KT 16
#define DW_KR 4
#define DW_CT 32
#define DW_THREADS ((DW_KT / DW_KR) * DW_CT)
#define DW_SMEM_MAX 49152 /* bytes of dynamic shared memory without an opt-in */
#define DW_BLOCKS 512     /* blocks aimed at, from the shape alone */

/* Floats of one staged input plane: (p + 2) x (q + 2), made odd. */
static int64_t dw_plane(const nm_conv_geom *g) { return ((g->p + 2) * (g->q + 2)) | 1; }

static size_t dw_smem(const nm_conv_geom *g) {
    return (size_t)(DW_CT * dw_plane(g) + DW_KT * g->p * g->q) * sizeof(float);
}

static int64_t dw_tiles(const nm_conv_geom *g) {
    return ((g->k + DW_KT - 1) / DW_KT) * ((g->c + DW_CT - 1) / DW_CT);
}

/* Images per block: about DW_BLOCKS blocks in all, from the shape alone. */
static int64_t dw_images(const nm_conv_geom *g) {
    int64_t nb = (g->n * dw_tiles(g) + DW_BLOCKS - 1) / DW_BLOCKS;
    return nb < 1 ? 1 : nb;
}

template <bool NHWC>
__global__ void __launch_bounds__(DW_THREADS)
    dw3x3_kernel(const float *__restrict__ x, const float *__restrict__ dz,
                 float *__restrict__ part, int n, int c, int h, int w, int k, int p, int q, int ph,
                 int pw, int nb, int ktiles, int plane) {
    cuda_pdl_enter();
    extern __shared__ float sm[];
    float *xs = sm, *zs = sm + DW_CT * plane;
    const int qq = q + 2, pq = p * q;
    const int k0 = (blockIdx.x % ktiles) * DW_KT, c0 = (blockIdx.x / ktiles) * DW_CT;
    const int tc = threadIdx.x % DW_CT, tk = threadIdx.x / DW_CT;
    float acc[DW_KR][9];
#pragma unroll
    for (int j = 0; j < DW_KR; j++)
#pragma unroll
        for (int t = 0; t < 9; t++) acc[j][t] = 0.0f;
    /* the padding stays 0: the copies below write the interior only */
    for (int i = threadIdx.x; i < DW_CT * plane; i += DW_THREADS) xs[i] = 0.0f;
    const int hw = h * w, nch = min(DW_CT, c - c0), nk = min(DW_KT, k - k0);
    const int nlo = blockIdx.y * nb, nhi = min(n, nlo + nb);
    for (int img = nlo; img < nhi; img++) {
        __syncthreads(); /* the previous image's reads (and the zeroing) are done */
        if (!NHWC) {
            /* the block's channels of the image are one contiguous run of nch * h * w floats */
            const float *xi = x + ((int64_t)img * c + c0) * hw;
            for (int i = threadIdx.x; i < nch * hw; i += DW_THREADS) {
                int ch = i / hw, r = i - ch * hw, yy = r / w;
                xs[ch * plane + (yy + ph) * qq + (r - yy * w) + pw] = __ldg(xi + i);
            }
            const float *zi = dz + ((int64_t)img * k + k0) * pq;
            for (int i = threadIdx.x; i < DW_KT * pq; i += DW_THREADS)
                zs[i] = i < nk * pq ? __ldg(zi + i) : 0.0f;
        } else {
            /* a pixel's nch channels are a run of x, pixels c apart; its DW_KT filters' dz a
             * run of dz, pixels k apart */
            const float *xi = x + (int64_t)img * hw * c + c0;
            for (int i = threadIdx.x; i < nch * hw; i += DW_THREADS) {
                int pix = i / nch, ch = i - pix * nch, yy = pix / w;
                xs[ch * plane + (yy + ph) * qq + (pix - yy * w) + pw] =
                    __ldg(xi + (int64_t)pix * c + ch);
            }
            const float *zi = dz + (int64_t)img * pq * k + k0;
            for (int i = threadIdx.x; i < DW_KT * pq; i += DW_THREADS) {
                int pix = i / DW_KT, kk = i % DW_KT;
                zs[kk * pq + pix] = kk < nk ? __ldg(zi + (int64_t)pix * k + kk) : 0.0f;
            }
        }
        __syncthreads();
        const float *xp = xs + tc * plane, *zp = zs + tk * DW_KR * pq;
        for (int oy = 0; oy < p; oy++) {
            float win[3][3];
#pragma unroll
            for (int r = 0; r < 3; r++) {
                win[r][0] = xp[(oy + r) * qq];
                win[r][1] = xp[(oy + r) * qq + 1];
            }
            for (int ox = 0; ox < q; ox++) {
#pragma unroll
                for (int r = 0; r < 3; r++) win[r][2] = xp[(oy + r) * qq + ox + 2];
                float zv[DW_KR];
#pragma unroll
                for (int j = 0; j < DW_KR; j++) zv[j] = zp[j * pq + oy * q + ox];
#pragma unroll
                for (int j = 0; j < DW_KR; j++)
#pragma unroll
                    for (int r = 0; r < 3; r++)
#pragma unroll
                        for (int s2 = 0; s2 < 3; s2++)
                            acc[j][r * 3 + s2] = fmaf(zv[j], win[r][s2], acc[j][r * 3 + s2]);
#pragma unroll
                for (int r = 0; r < 3; r++) win[r][0] = win[r][1], win[r][1] = win[r][2];
            }
        }
    }
    const int cc = c0 + tc;
    if (cc >= c) return;
#pragma unroll
    for (int j = 0; j < DW_KR; j++) {
        int kk = k0 + tk * DW_KR + j;
        if (kk >= k) continue;
        if (!NHWC) {
            float *o = part + (((int64_t)blockIdx.y * k + kk) * c + cc) * 9;
#pragma unroll
            for (int t = 0; t < 9; t++) o[t] = acc[j][t];
        } else { /* [K][3][3][C]: a warp's 32 channels adjacent */
            float *o = part + ((int64_t)blockIdx.y * k + kk) * 9 * c + cc;
#pragma unroll
            for (int t = 0; t < 9; t++) o[(int64_t)t * c] = acc[j][t];
        }
    }
}

extern "C" {

size_t cuda_conv_direct_wgrad_ws(const nm_conv_geom *g) {
    if (g->groups != 1 || g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 ||
        g->dw != 1 || g->n < 1 || g->p < 1 || g->q < 1 || g->k < 1 || g->c < 1 ||
        dw_smem(g) > DW_SMEM_MAX || g->n > INT32_MAX / 2 || g->k * g->c > INT32_MAX / 9)
        return SIZE_MAX;
    int64_t chunks = (g->n + dw_images(g) - 1) / dw_images(g);
    if (dw_tiles(g) > INT32_MAX || chunks > 65535) return SIZE_MAX;
    return align256((size_t)(chunks * g->k * g->c * 9) * sizeof(float));
}

neat_status cuda_conv_direct_wgrad(nm_device *dev, const nm_conv_geom *g, const float *x,
                                   const float *dz, float beta, float *dw, void *ws,
                                   const char *what) {
    if (cuda_conv_direct_wgrad_ws(g) == SIZE_MAX)
        return nm_error(NEAT_ERR_INTERNAL, "%s: the direct backward filter does not fit", what);
    int64_t nb = dw_images(g), chunks = (g->n + nb - 1) / nb, nw = g->k * g->c * 9;
    int ktiles = (int)((g->k + DW_KT - 1) / DW_KT);
    cuda_device *d = cuda_dev(dev);
    dim3 grid((unsigned)dw_tiles(g), (unsigned)chunks);
    auto kernel = g->nhwc ? dw3x3_kernel<true> : dw3x3_kernel<false>;
    kernel<<<grid, DW_THREADS, dw_smem(g), d->stream>>>(
        x, dz, (float *)ws, (int)g->n, (int)g->c, (int)g->h, (int)g->w, (int)g->k, (int)g->p,
        (int)g->q, (int)g->ph, (int)g->pw, (int)nb, ktiles, (int)dw_plane(g));
    neat_status st = cuda_launched(what, "dw3x3_kernel");
    if (st) return st;
    cuda_launch(dev, sum_parts_kernel, cuda_grid(dev, nw), CUDA_THREADS, (const float *)ws, chunks,
                nw, beta, dw);
    return cuda_launched(what, "sum_parts_kernel");
}

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
    if (g->groups != 1 || g->nhwc)
        return nm_error(NEAT_ERR_INTERNAL, "%s: the im2col backward filter takes one group in NCHW",
                        what);
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
