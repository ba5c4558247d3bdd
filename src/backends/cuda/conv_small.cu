/*
 * conv_small.cu — convolutions of few input channels by neatml's own kernels: 3x3, stride 1,
 * one group, C <= 4 (LeNet's first layer, a network's first layer over RGB); float32, and
 * bf16/f16 storage with float32 math (relu or no activation: what conv.cu's half paths take):
 *
 *   forward:  y = act(conv(x, w) + b), one pass: the convolution, bias and activation of
 *             each output in one thread, y written once;
 *   backward, dx not asked for (the input is the data): dz = act'(y) dy taken on the fly,
 *             dw and db from one pass over dy and y.
 *
 * Why: with 9C products per output these layers move memory, not arithmetic. On the H200
 * LeNet's conv1 (x 128x1x28x28, 32 filters, 12.8 MB of output) took 0.024 ms forward (cuDNN's
 * convolution, then the bias and relu pass over y) and 0.037 ms for dw (relu's gradient
 * written to scratch, then the im2col GEMM), + db's two reductions of dz
 * (bench/micro/conv_parts.c, 2026-11-30 21:52 UTC), against some 3 us to write y once and
 * 6 us to read dy and y once at the copy bandwidth.
 *
 * Numerics: each output or gradient term is a float32 product accumulated by fmaf in
 * float32 (half inputs widened exactly, each result rounded once to its type): the strict
 * bound (exact products, float32 sums), in an order fixed by the shape, the same bits at
 * every run and replay, exact on small integers. Forward: over c, then the
 * 3x3 window row by row, then + b, then act. Backward: each thread sums its pixels in
 * order; a warp adds its lanes in a fixed tree (sc_warp_sums), the block its warps in
 * order, into part[chunk]; sc_sum_kernel adds the chunks in a fixed tree.
 * NEATML_CONV_SMALL=0 leaves these kernels out (cuDNN and conv_gemm.cu as before).
 *
 * NHWC (g->nhwc, template NHWC): x [N,H,W,C], w [K,3,3,C], y and dy [N,P,Q,K]; a thread's
 * filters are adjacent in y instead of P*Q apart, the window's channels adjacent in x; the
 * same sums in the same order (dw stored in its NHWC order), so the same bits as NCHW.
 */
#include "common.cuh"

#define SC_THREADS 256
#define SC_WARPS (SC_THREADS / 32)
#define SC_FWD_KT 32     /* filters of a forward block: each thread all of them for a pixel */
#define SC_BWD_PIX 2048  /* pixels of a backward block, at least */
#define SC_BWD_CHUNKS 64 /* backward blocks along the pixels, at most (sc_sum_kernel's lanes) */

/* Filters of a backward block: KT (9C + 1) accumulators per thread, at most 96. */
template <int C> struct sc_bwd_tile {
    enum { KT = C == 1 ? 8 : C == 2 ? 4 : 2 };
};

/* x's 3x3 window of output pixel (oy, ox), each of the C channels, as xv[c * 9 + r * 3 + s];
 * 0 in the padding. NHWC: x [N,H,W,C] (else [N,C,H,W]). */
template <class T, int C, bool NHWC>
__device__ __forceinline__ void sc_window(const T *__restrict__ x, int64_t img, int h, int w,
                                          int oy, int ox, int ph, int pw, float (&xv)[C * 9]) {
#pragma unroll
    for (int c = 0; c < C; c++) {
        const T *xp = NHWC ? x + img * C * (int64_t)h * w + c : x + (img * C + c) * (int64_t)h * w;
#pragma unroll
        for (int r = 0; r < 3; r++) {
            int yy = oy + r - ph;
#pragma unroll
            for (int s = 0; s < 3; s++) {
                int xx = ox + s - pw;
                xv[c * 9 + r * 3 + s] = yy >= 0 && yy < h && xx >= 0 && xx < w
                                            ? ld(xp + ((int64_t)yy * w + xx) * (NHWC ? C : 1))
                                            : 0.0f;
            }
        }
    }
}

/* Where weight j = c * 9 + r * 3 + s of a filter lies in it: [C,3,3], or [3,3,C] in NHWC. */
template <int C, bool NHWC> __device__ __forceinline__ int sc_wat(int j) {
    return NHWC ? (j % 9) * C + j / 9 : j;
}

/* Block b: filter tile b % ktiles, pixels (b / ktiles) * SC_THREADS... of the n*p*q outputs
 * (images one after another). The tile's weights are read from shared memory as float4, the
 * same address across the warp. */
template <class T, int C, int ACT, bool NHWC>
__global__ void __launch_bounds__(SC_THREADS)
    sc_fwd_kernel(const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ b,
                  T *__restrict__ y, int64_t npix, int h, int wd, int k, int p, int q, int ph,
                  int pw, int ktiles) {
    cuda_pdl_enter();
    constexpr int KS = (C * 9 + 3) / 4 * 4; /* floats of a filter in shared memory */
    __shared__ float4 ws4[SC_FWD_KT * KS / 4];
    __shared__ float bs[SC_FWD_KT];
    float *ws = (float *)ws4;
    const int k0 = (int)(blockIdx.x % ktiles) * SC_FWD_KT, nk = min(SC_FWD_KT, k - k0);
    for (int i = threadIdx.x; i < nk * KS; i += SC_THREADS) {
        int kk = i / KS, j = i - kk * KS;
        ws[i] = j < C * 9 ? ld(w + (int64_t)(k0 + kk) * C * 9 + sc_wat<C, NHWC>(j)) : 0.0f;
    }
    if (b)
        for (int i = threadIdx.x; i < nk; i += SC_THREADS) bs[i] = ld(b + k0 + i);
    __syncthreads();
    const int64_t idx0 = (int64_t)(blockIdx.x / ktiles) * SC_THREADS, idx = idx0 + threadIdx.x;
    /* NHWC: the block's outputs are staged in shared memory ([pixel][filter], a row of 33 so
     * that the threads' rows fall in different banks) and written after as whole rows of the
     * tile's filters, adjacent in y: written straight, each thread's 32 filters K apart would
     * turn every store of a warp into 32 partial sectors. */
    __shared__ float ys[NHWC ? SC_THREADS * (SC_FWD_KT + 1) : 1];
    if (idx < npix) {
        const int pq = p * q;
        const int64_t img = idx / pq;
        const int pix = (int)(idx - img * pq), oy = pix / q, ox = pix - oy * q;
        float xv[C * 9];
        sc_window<T, C, NHWC>(x, img, h, wd, oy, ox, ph, pw, xv);
        T *yo = y + (img * k + k0) * pq + pix; /* NCHW: filter kk's output pq apart */
        for (int kk = 0; kk < nk; kk++) {
            float wr[KS];
#pragma unroll
            for (int j = 0; j < KS / 4; j++) {
                float4 v = ws4[kk * (KS / 4) + j];
                wr[4 * j] = v.x, wr[4 * j + 1] = v.y, wr[4 * j + 2] = v.z, wr[4 * j + 3] = v.w;
            }
            float acc = 0.0f;
#pragma unroll
            for (int j = 0; j < C * 9; j++) acc = fmaf(wr[j], xv[j], acc);
            if (b) acc += bs[kk];
            if (NHWC)
                ys[threadIdx.x * (SC_FWD_KT + 1) + kk] = act_fwd<ACT>(acc);
            else
                st(yo + (int64_t)kk * pq, act_fwd<ACT>(acc));
        }
    }
    if (!NHWC) return;
    __syncthreads();
    /* pixel idx0 + r's filters k0 .. k0 + nk - 1 sit at y[(idx0 + r) k + k0 ...] */
    const int rows = (int)min((int64_t)SC_THREADS, npix - idx0);
    for (int e = threadIdx.x; e < rows * nk; e += SC_THREADS) {
        int r = e / nk, kk = e - r * nk;
        st(y + (idx0 + r) * k + k0 + kk, ys[r * (SC_FWD_KT + 1) + kk]);
    }
}

/* The warp's sums of 32 values at once (v[0..31] in each lane): 31 shuffles, not 5 per
 * value. At each step a lane keeps one half of its values and adds its partner's copy of that
 * half; at the end lane L holds the sum over the 32 lanes of value L in v[0], added in a tree
 * fixed by the lane numbers. (Steps as templates: a loop over the step leaves v in local
 * memory.) */
template <int S> __device__ __forceinline__ void sc_halve(float *v, bool up) {
#pragma unroll
    for (int i = 0; i < S; i++) {
        float send = up ? v[i] : v[i + S], keep = up ? v[i + S] : v[i];
        v[i] = keep + __shfl_xor_sync(0xffffffffu, send, S);
    }
}

__device__ __forceinline__ float sc_warp_sums(float *v) {
    const int lane = threadIdx.x & 31;
    sc_halve<16>(v, lane & 16);
    sc_halve<8>(v, lane & 8);
    sc_halve<4>(v, lane & 4);
    sc_halve<2>(v, lane & 2);
    sc_halve<1>(v, lane & 1);
    return v[0];
}

/* Block b: filter tile b % ktiles (KT filters), pixels [chunk * per_block, + per_block) of
 * the n*p*q outputs, chunk = b / ktiles. Each thread: dz = act'(y) dy for its pixels and the
 * tile's filters, dw terms dz * window and db terms dz; the block's sums go to
 * part[chunk][k][C*9] (dw) and partb[chunk][k] (db). */
template <class T, int C, int ACT, bool NHWC>
__global__ void __launch_bounds__(SC_THREADS)
    sc_bwd_kernel(const T *__restrict__ x, const T *__restrict__ y, const T *__restrict__ dy,
                  float *__restrict__ part, float *__restrict__ partb, int64_t npix,
                  int64_t per_block, int h, int wd, int k, int p, int q, int ph, int pw,
                  int ktiles) {
    cuda_pdl_enter();
    constexpr int KT = sc_bwd_tile<C>::KT, NW = KT * C * 9, NV = NW + KT, NG = (NV + 31) / 32;
    __shared__ float red[SC_WARPS][NG * 32];
    float acc[NG * 32];
#pragma unroll
    for (int i = 0; i < NG * 32; i++) acc[i] = 0.0f;
    const int k0 = (int)(blockIdx.x % ktiles) * KT, nk = min(KT, k - k0);
    const int64_t chunk = blockIdx.x / ktiles, lo = chunk * per_block;
    const int64_t hi = min(npix, lo + per_block);
    const int pq = p * q;
    const int64_t ks = NHWC ? 1 : pq; /* between the filters' dy (and y) of a pixel */
    int64_t img = (lo + threadIdx.x) / pq;
    int pix = (int)(lo + threadIdx.x - img * pq); /* then stepped, without a 64-bit division */
    for (int64_t idx = lo + threadIdx.x; idx < hi; idx += SC_THREADS) {
        const int oy = pix / q, ox = pix - oy * q;
        const int64_t at = NHWC ? (img * pq + pix) * k + k0 : (img * k + k0) * pq + pix;
        float dz[KT];
        if (NHWC && k % KT == 0) { /* the tile's KT values adjacent and aligned: vector loads */
            load_n<T, KT>(dy + at, dz);
            if (ACT != NEAT_ACT_NONE) {
                float yv[KT];
                load_n<T, KT>(y + at, yv);
#pragma unroll
                for (int kk = 0; kk < KT; kk++) dz[kk] = act_bwd<ACT>(0.0f, yv[kk], dz[kk]);
            }
        } else {
#pragma unroll
            for (int kk = 0; kk < KT; kk++) {
                float g = kk < nk ? ld(dy + at + kk * ks) : 0.0f;
                if (ACT != NEAT_ACT_NONE)
                    g = kk < nk ? act_bwd<ACT>(0.0f, ld(y + at + kk * ks), g) : 0.0f;
                dz[kk] = g;
            }
        }
        float xv[C * 9];
        sc_window<T, C, NHWC>(x, img, h, wd, oy, ox, ph, pw, xv);
#pragma unroll
        for (int kk = 0; kk < KT; kk++) {
#pragma unroll
            for (int j = 0; j < C * 9; j++)
                acc[kk * C * 9 + j] = fmaf(dz[kk], xv[j], acc[kk * C * 9 + j]);
            acc[NW + kk] += dz[kk];
        }
        for (pix += SC_THREADS; pix >= pq; pix -= pq) img++;
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int gi = 0; gi < NG; gi++) red[warp][gi * 32 + lane] = sc_warp_sums(acc + gi * 32);
    __syncthreads();
    for (int v = threadIdx.x; v < NV; v += SC_THREADS) {
        float s = red[0][v];
        for (int i = 1; i < SC_WARPS; i++) s += red[i][v];
        int kk = v < NW ? v / (C * 9) : v - NW;
        if (kk >= nk) continue;
        if (v < NW) /* in dw's own order, which sc_sum_kernel keeps */
            part[(chunk * k + k0 + kk) * (C * 9) + sc_wat<C, NHWC>(v - kk * C * 9)] = s;
        else
            partb[chunk * k + k0 + kk] = s;
    }
}

/* out[i] = the sum over chunks of part[chunk][i] (+ beta out[i]; out not read when beta is
 * 0), a warp per i: lane L adds chunks L and L + 32, then warp_sum's fixed tree. Over
 * [0, nw) part and dw; over [nw, nw + nb) partb and db (db NULL: not written). */
template <class T>
__global__ void sc_sum_kernel(const float *__restrict__ part, const float *__restrict__ partb,
                              int chunks, int nw, int nb, float beta, T *dw, T *db) {
    cuda_pdl_enter();
    const int lane = threadIdx.x & 31;
    const int64_t i = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
    if (i >= nw + (db ? nb : 0)) return;
    const float *src = i < nw ? part + i : partb + (i - nw);
    const int64_t stride = i < nw ? nw : nb;
    float s = lane < chunks ? src[lane * stride] : 0.0f;
    if (lane + 32 < chunks) s += src[(lane + 32) * stride];
    s = warp_sum(s);
    if (lane) return;
    T *o = i < nw ? dw + i : db + (i - nw);
    st(o, beta != 0.0f ? s + beta * ld(o) : s);
}

/* Backward geometry, from the shape alone (so the sums' order is too). */
static int64_t sc_per_block(const nm_conv_geom *g) {
    int64_t npix = g->n * g->p * g->q, per = (npix + SC_BWD_CHUNKS - 1) / SC_BWD_CHUNKS;
    return per < SC_BWD_PIX ? SC_BWD_PIX : per;
}

static int sc_bwd_kt(int64_t c) { return c == 1 ? 8 : c == 2 ? 4 : 2; }

/* LAUNCH(C, ACT, NHWC) for the run-time channel count g->c (1 to 4) and layout g->nhwc. */
#define SC_BY_C_L(LAUNCH, ACT, L)                                                                  \
    switch (g->c) {                                                                                \
    case 1: LAUNCH(1, ACT, L); break;                                                              \
    case 2: LAUNCH(2, ACT, L); break;                                                              \
    case 3: LAUNCH(3, ACT, L); break;                                                              \
    default: LAUNCH(4, ACT, L); break;                                                             \
    }
#define SC_BY_C(LAUNCH, ACT)                                                                       \
    if (g->nhwc) {                                                                                 \
        SC_BY_C_L(LAUNCH, ACT, true)                                                               \
    } else {                                                                                       \
        SC_BY_C_L(LAUNCH, ACT, false)                                                              \
    }

/* Storage type T: float32 takes every activation, half types relu and none (conv.cu's half
 * paths; the others run on float32 copies, half.cu). */
template <class T>
static void sc_forward(nm_device *dev, const nm_conv_geom *g, neat_activation act, const T *x,
                       const T *w, const T *b, T *y) {
    int64_t npix = g->n * g->p * g->q;
    int ktiles = (int)((g->k + SC_FWD_KT - 1) / SC_FWD_KT);
    unsigned blocks = (unsigned)(((npix + SC_THREADS - 1) / SC_THREADS) * ktiles);
#define SC_FWD(C, ACT, L)                                                                          \
    cuda_launch(dev, sc_fwd_kernel<T, C, ACT, L>, blocks, SC_THREADS, x, w, b, y, npix, (int)g->h, \
                (int)g->w, (int)g->k, (int)g->p, (int)g->q, (int)g->ph, (int)g->pw, ktiles)
#define SC_FWD_C(ACT) SC_BY_C(SC_FWD, ACT)
    if (sizeof(T) == 4) {
        CUDA_ACT_DISPATCH(act, SC_FWD_C)
    } else if (act == NEAT_ACT_RELU) {
        SC_FWD_C(NEAT_ACT_RELU)
    } else {
        SC_FWD_C(NEAT_ACT_NONE)
    }
#undef SC_FWD_C
#undef SC_FWD
}

template <class T>
static void sc_backward(nm_device *dev, const nm_conv_geom *g, neat_activation act, const T *x,
                        const T *y, const T *dy, float beta, T *dw, T *db, void *ws) {
    int64_t npix = g->n * g->p * g->q, per = sc_per_block(g), chunks = (npix + per - 1) / per;
    int kt = sc_bwd_kt(g->c), ktiles = (int)((g->k + kt - 1) / kt);
    int nw = (int)(g->k * g->c * 9);
    float *part = (float *)ws, *partb = part + chunks * nw;
    unsigned blocks = (unsigned)(chunks * ktiles);
#define SC_BWD(C, ACT, L)                                                                          \
    cuda_launch(dev, sc_bwd_kernel<T, C, ACT, L>, blocks, SC_THREADS, x, y, dy, part, partb, npix, \
                per, (int)g->h, (int)g->w, (int)g->k, (int)g->p, (int)g->q, (int)g->ph,            \
                (int)g->pw, ktiles)
#define SC_BWD_C(ACT) SC_BY_C(SC_BWD, ACT)
    if (act == NEAT_ACT_RELU) {
        SC_BWD_C(NEAT_ACT_RELU)
    } else if (sizeof(T) == 4 && act == NEAT_ACT_SIGMOID) {
        SC_BWD_C(NEAT_ACT_SIGMOID)
    } else if (sizeof(T) == 4 && act == NEAT_ACT_TANH) {
        SC_BWD_C(NEAT_ACT_TANH)
    } else {
        SC_BWD_C(NEAT_ACT_NONE)
    }
#undef SC_BWD_C
#undef SC_BWD
    if (cudaPeekAtLastError() != cudaSuccess) return; /* the caller reports it */
    int64_t warps = nw + (db ? g->k : 0);
    cuda_launch(dev, sc_sum_kernel<T>, (unsigned)((warps * 32 + CUDA_THREADS - 1) / CUDA_THREADS),
                CUDA_THREADS, (const float *)part, (const float *)partb, (int)chunks, nw, (int)g->k,
                beta, dw, db);
}

extern "C" {

int cuda_conv_small_fits(const nm_conv_geom *g) {
    const int64_t lim = INT32_MAX / 4;
    return g->groups == 1 && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 &&
           g->dw == 1 && g->c >= 1 && g->c <= 4 && g->n >= 1 && g->k >= 1 && g->p >= 1 &&
           g->q >= 1 && g->h <= lim && g->w <= lim && g->ph <= lim && g->pw <= lim &&
           g->p * g->q <= lim && g->k <= lim / 64 &&
           g->n * g->p * g->q <= (int64_t)SC_THREADS * (INT32_MAX / ((g->k + 31) / 32));
}

int cuda_conv_small_act(neat_dtype dt, neat_activation act, int backward) {
    if (dt != NEAT_F32) return act == NEAT_ACT_NONE || act == NEAT_ACT_RELU;
    return !backward || act != NEAT_ACT_GELU; /* act' from y: gelu's needs its input */
}

neat_status cuda_conv_small_forward(nm_device *dev, const nm_conv_geom *g, neat_dtype dt,
                                    neat_activation act, const void *x, const void *w,
                                    const void *b, void *y, const char *what) {
    if (!cuda_conv_small_fits(g) || !cuda_conv_small_act(dt, act, 0))
        return nm_error(NEAT_ERR_INTERNAL, "%s: the small-channel convolution does not fit", what);
    if (dt == NEAT_BF16)
        sc_forward(dev, g, act, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)w,
                   (const __nv_bfloat16 *)b, (__nv_bfloat16 *)y);
    else if (dt == NEAT_F16)
        sc_forward(dev, g, act, (const __half *)x, (const __half *)w, (const __half *)b,
                   (__half *)y);
    else
        sc_forward(dev, g, act, (const float *)x, (const float *)w, (const float *)b, (float *)y);
    return cuda_launched(what, "sc_fwd_kernel");
}

size_t cuda_conv_small_backward_ws(const nm_conv_geom *g) {
    int64_t chunks = (g->n * g->p * g->q + sc_per_block(g) - 1) / sc_per_block(g);
    return (size_t)(chunks * g->k * (g->c * 9 + 1)) * sizeof(float);
}

neat_status cuda_conv_small_backward(nm_device *dev, const nm_conv_geom *g, neat_dtype dt,
                                     neat_activation act, const void *x, const void *y,
                                     const void *dy, float beta, void *dw, void *db, void *ws,
                                     const char *what) {
    if (!cuda_conv_small_fits(g) || !cuda_conv_small_act(dt, act, 1))
        return nm_error(NEAT_ERR_INTERNAL, "%s: the small-channel backward does not fit", what);
    if (dt == NEAT_BF16)
        sc_backward(dev, g, act, (const __nv_bfloat16 *)x, (const __nv_bfloat16 *)y,
                    (const __nv_bfloat16 *)dy, beta, (__nv_bfloat16 *)dw, (__nv_bfloat16 *)db, ws);
    else if (dt == NEAT_F16)
        sc_backward(dev, g, act, (const __half *)x, (const __half *)y, (const __half *)dy, beta,
                    (__half *)dw, (__half *)db, ws);
    else
        sc_backward(dev, g, act, (const float *)x, (const float *)y, (const float *)dy, beta,
                    (float *)dw, (float *)db, ws);
    return cuda_launched(what, "sc_bwd_kernel, sc_sum_kernel");
}

} /* extern "C" */
