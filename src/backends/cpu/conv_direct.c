/*
 * conv_direct.c — 3x3 stride-1 convolutions with one input channel per group (C/G == 1: a
 * first layer on single-channel images such as LeNet's conv1, or a depthwise layer) as an
 * OpenMP loop on NCHW: the forward, with a bias and relu or no activation.
 *
 *   y[n,k,p,q] = act(b[k] + sum_{i,j < 3} w[k,0,i,j] xpad[n, k / (K/G), p + i*dh, q + j*dw])
 *
 * xpad is the input plane with ph rows and pw columns of zeros around it (PH x PW), built
 * once per (image, channel) in per-thread scratch and used by the K/G output channels of
 * that group. Over the padded grid, output (p, q) at s = p*PW + q reads xpad[s + i*dh*PW +
 * j*dw]: one flat loop over L = (P-1)*PW + Q positions per output plane with the 9 weights
 * in registers (the 2*dw positions between rows are computed and dropped), then the Q
 * valid columns of each row are copied out. Each output is b, then the 9 products added in
 * (i, j) order (fused multiply-adds where the target has them).
 *
 * Why not oneDNN here: with one input channel its kernel writes nChw16c, and the reorder to
 * NCHW cost more than the convolution: LeNet's conv1 at batch 128 (1x28x28 -> 32 channels)
 * took 0.93 ms in oneDNN 2.6 plus 1.17 ms of reorder on the development VM, and about
 * 1.0 ms in this loop (docs/BENCHMARKS.md).
 */
#include "cpu.h"
#include "loops.h"

#include <string.h>

int cpu_conv_direct_ok(const nm_conv_geom *g, neat_activation act) {
    return !g->nhwc && g->c == g->groups && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 &&
           (act == NEAT_ACT_NONE || act == NEAT_ACT_RELU) && g->p > 0 && g->q > 0;
}

size_t cpu_conv_direct_scratch(const nm_conv_geom *g, int nthreads) {
    size_t plane = (size_t)((g->h + 2 * g->ph) * (g->w + 2 * g->pw));
    return (size_t)nthreads * 2 * plane * sizeof(float); /* xpad and the flat outputs */
}

/* One output plane: the flat loop over the padded grid into flat[len], then the Q valid
 * columns of each of the P rows into y (a plain loop: memcpy calls of a row of a small
 * image cost more than the copy). */
CPU_CLONES static void direct_plane(const nm_conv_geom *g, const float *restrict xpad,
                                    const float *w, float b, int relu, float *restrict flat,
                                    float *restrict y) {
    const float w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4], w5 = w[5], w6 = w[6],
                w7 = w[7], w8 = w[8];
    const int64_t pws = g->w + 2 * g->pw, len = (g->p - 1) * pws + g->q;
    const int64_t r1 = g->dh * pws, r2 = 2 * g->dh * pws, c1 = g->dw, c2 = 2 * g->dw;
    for (int64_t s = 0; s < len; s++) {
        const float *a = xpad + s;
        float v = b;
        v += w0 * a[0];
        v += w1 * a[c1];
        v += w2 * a[c2];
        v += w3 * a[r1];
        v += w4 * a[r1 + c1];
        v += w5 * a[r1 + c2];
        v += w6 * a[r2];
        v += w7 * a[r2 + c1];
        v += w8 * a[r2 + c2];
        flat[s] = relu && v < 0.0f ? 0.0f : v; /* as cpu_act_apply's relu: NaN stays NaN */
    }
    for (int64_t r = 0; r < g->p; r++)
        for (int64_t q = 0; q < g->q; q++) y[r * g->q + q] = flat[r * pws + q];
}

/* xpad <- plane x (H x W) with ph rows and pw columns of zeros around it. */
static void pad_plane(const nm_conv_geom *g, const float *x, float *xpad) {
    int64_t pws = g->w + 2 * g->pw, phs = g->h + 2 * g->ph;
    memset(xpad, 0, (size_t)(g->ph * pws) * sizeof(float));
    for (int64_t r = 0; r < g->h; r++) {
        float *row = xpad + (g->ph + r) * pws;
        memset(row, 0, (size_t)g->pw * sizeof(float));
        memcpy(row + g->pw, x + r * g->w, (size_t)g->w * sizeof(float));
        memset(row + g->pw + g->w, 0, (size_t)g->pw * sizeof(float));
    }
    memset(xpad + (g->ph + g->h) * pws, 0, (size_t)((phs - g->ph - g->h) * pws) * sizeof(float));
}

void cpu_conv_direct_forward(int nthreads, const nm_conv_geom *g, const float *x, const float *w,
                             const float *b, neat_activation act, float *y, float *scratch) {
    const int64_t plane = (g->h + 2 * g->ph) * (g->w + 2 * g->pw), per_group = g->k / g->groups;
    const int relu = act == NEAT_ACT_RELU;
    int par = cpu_par(nthreads, g->n * g->k * g->p * g->q);
    CPU_FOR(par, task, g->n * g->c, {
        float *xpad = scratch + (size_t)omp_get_thread_num() * 2 * (size_t)plane;
        int64_t img = task / g->c, ch = task % g->c;
        pad_plane(g, x + task * g->h * g->w, xpad);
        for (int64_t m = 0; m < per_group; m++) {
            int64_t k = ch * per_group + m;
            direct_plane(g, xpad, w + k * 9, b ? b[k] : 0.0f, relu, xpad + plane,
                         y + (img * g->k + k) * g->p * g->q);
        }
    });
}

/* ---- 3x3 stride-1 convolutions with several input channels, on small planes ------------
 *
 *   y[n,k,p,q] = act(b[k] + sum_c sum_{i,j < 3} w[k,c,i,j] xpad[n, c, p + i, q + j])
 *
 * For LeNet's second layer and its kin (x 32x14x14, 64 filters) oneDNN 2.6 reads x
 * reordered into nChw16c and writes y in nChw16c, reordered back to NCHW after: 5.1 ms of
 * convolution and 1.1 ms of reorders at batch 128 on the development VM (docs/BENCHMARKS.md,
 * "issue 13's second round"). Here the weights are first packed as [K/8][C][9][8] (the 8
 * filters of a block side by side), then per image the C input planes are padded once into
 * per-thread scratch (stride PS = PH x PW + slack), and for each run of MULTI_SB = 48
 * consecutive positions of the padded grid (flat index s = p*PW + q, as direct_plane's)
 * and each block of 8 filters, 24 AVX-512 accumulators take, for each channel and tap,
 * three unaligned loads of x and 8 broadcast weights (one cache line) into 24 fused
 * multiply-adds. The x rows a run reads stay in L1 over the K/8 blocks. Positions past Q
 * in a row and past the last row are computed and dropped when the rows are copied out
 * with the bias and relu. Each output is the sum over c of the 9 taps in (i, j) order, then
 * + b. AVX-512 only (the dispatcher checks the CPU); other machines keep oneDNN. */
#define MULTI_KB 8  /* filters per block */
#define MULTI_SB 48 /* padded-grid positions per run: three vectors */

static int64_t multi_stride(const nm_conv_geom *g) { /* floats of one padded plane + slack */
    int64_t plane = (g->h + 2 * g->ph) * (g->w + 2 * g->pw);
    return (plane + 2 * MULTI_SB + 15) / 16 * 16;
}

static int64_t multi_len(const nm_conv_geom *g) { /* flat positions, rounded up to runs */
    int64_t len = (g->p - 1) * (g->w + 2 * g->pw) + g->q;
    return (len + MULTI_SB - 1) / MULTI_SB * MULTI_SB;
}

int cpu_conv_direct_multi_ok(const nm_conv_geom *g, neat_activation act) {
#if defined(__x86_64__) && defined(__GNUC__)
    return !g->nhwc && g->groups == 1 && g->c >= 2 && g->kh == 3 && g->kw == 3 && g->sh == 1 &&
           g->sw == 1 && g->dh == 1 && g->dw == 1 &&
           (act == NEAT_ACT_NONE || act == NEAT_ACT_RELU) && g->p > 0 && g->q > 0 &&
           g->k % MULTI_KB == 0 && (g->h + 2 * g->ph) * (g->w + 2 * g->pw) <= 1024 &&
           g->c * multi_stride(g) * (int64_t)sizeof(float) <= (256 << 10) &&
           g->k * g->c * 9 * (int64_t)sizeof(float) <= (1 << 20) &&
           __builtin_cpu_supports("avx512f");
#else
    (void)g, (void)act;
    return 0;
#endif
}

/* The packed weights, then per thread the padded planes and the flat outputs of K filters. */
static size_t multi_per_thread(const nm_conv_geom *g) {
    return (size_t)(g->c * multi_stride(g) + g->k * multi_len(g));
}

size_t cpu_conv_direct_multi_scratch(const nm_conv_geom *g, int nthreads) {
    return ((size_t)(g->k * g->c * 9) + (size_t)nthreads * multi_per_thread(g)) * sizeof(float);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

/* xpad <- channel c of an image in nChw16c (blocks of 16 channels, [C/16][H][W][16]), padded
 * as pad_plane does. */
static void pad_plane_blocked(const nm_conv_geom *g, const float *x, int64_t c, float *xpad) {
    int64_t pws = g->w + 2 * g->pw, phs = g->h + 2 * g->ph, hw = g->h * g->w;
    const float *xc = x + (c / 16) * hw * 16 + c % 16;
    memset(xpad, 0, (size_t)(phs * pws) * sizeof(float));
    for (int64_t r = 0; r < g->h; r++)
        for (int64_t q = 0; q < g->w; q++)
            xpad[(g->ph + r) * pws + g->pw + q] = xc[(r * g->w + q) * 16];
}

/* One image: x [C,H,W] (or nChw16c when blocked) -> y [K,P,Q] (y += when acc); wp the packed
 * weights, xpad C padded planes, flat K rows of the padded grid. */
__attribute__((target("avx512f"))) static void multi_image(const nm_conv_geom *g, const float *x,
                                                           int blocked, const float *wp,
                                                           const float *b, int relu, int acc,
                                                           float *y, float *xpad, float *flat) {
    const int64_t pws = g->w + 2 * g->pw, ps = multi_stride(g), len = multi_len(g);
    const int64_t C = g->c;
    const int64_t plane = (g->h + 2 * g->ph) * pws;
    for (int64_t c = 0; c < C; c++) { /* the plane as direct_plane's, then the slack zeroed */
        if (blocked)
            pad_plane_blocked(g, x, c, xpad + c * ps);
        else
            pad_plane(g, x + c * g->h * g->w, xpad + c * ps);
        memset(xpad + c * ps + plane, 0, (size_t)(ps - plane) * sizeof(float));
    }
    const int64_t off[9] = {0, 1, 2, pws, pws + 1, pws + 2, 2 * pws, 2 * pws + 1, 2 * pws + 2};
    for (int64_t s0 = 0; s0 < len; s0 += MULTI_SB) {
        for (int64_t k0 = 0; k0 < g->k; k0 += MULTI_KB) {
            const float *wk = wp + k0 * C * 9; /* [C][9][8] of this block */
            __m512 acc[MULTI_KB][3];
            for (int j = 0; j < MULTI_KB; j++)
                acc[j][0] = acc[j][1] = acc[j][2] = _mm512_setzero_ps();
            for (int64_t c = 0; c < C; c++) {
                const float *xp = xpad + c * ps + s0, *wc = wk + c * 9 * MULTI_KB;
                for (int t = 0; t < 9; t++) {
                    __m512 x0 = _mm512_loadu_ps(xp + off[t]),
                           x1 = _mm512_loadu_ps(xp + off[t] + 16),
                           x2 = _mm512_loadu_ps(xp + off[t] + 32);
                    for (int j = 0; j < MULTI_KB; j++) {
                        __m512 wv = _mm512_set1_ps(wc[t * MULTI_KB + j]);
                        acc[j][0] = _mm512_fmadd_ps(wv, x0, acc[j][0]);
                        acc[j][1] = _mm512_fmadd_ps(wv, x1, acc[j][1]);
                        acc[j][2] = _mm512_fmadd_ps(wv, x2, acc[j][2]);
                    }
                }
            }
            for (int j = 0; j < MULTI_KB; j++) {
                float *f = flat + (k0 + j) * len + s0;
                _mm512_storeu_ps(f, acc[j][0]);
                _mm512_storeu_ps(f + 16, acc[j][1]);
                _mm512_storeu_ps(f + 32, acc[j][2]);
            }
        }
    }
    /* each row's Q outputs, + b, relu: max(0, v) returns v when v is NaN or -0 (MAXPS takes
     * its second operand then), as v < 0 ? 0 : v does */
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t k = 0; k < g->k; k++) {
        const __m512 bk = _mm512_set1_ps(b ? b[k] : 0.0f);
        float *yk = y + k * g->p * g->q;
        for (int64_t r = 0; r < g->p; r++) {
            const float *src = flat + k * len + r * pws;
            float *dst = yk + r * g->q;
            for (int64_t q0 = 0; q0 < g->q; q0 += 16) {
                __mmask16 m = g->q - q0 >= 16 ? 0xffff : (__mmask16)((1u << (g->q - q0)) - 1);
                __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, src + q0), bk);
                if (relu) v = _mm512_max_ps(zero, v);
                if (acc) v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + q0), v);
                _mm512_mask_storeu_ps(dst + q0, m, v);
            }
        }
    }
}

/* The images in parallel; scratch begins with the packed weights wp, filled by the caller. */
static void multi_run(int nthreads, const nm_conv_geom *g, const float *x, int blocked,
                      const float *b, int relu, int acc, float *y, float *scratch) {
    const float *wp = scratch;
    float *per_thread = scratch + g->k * g->c * 9;
    const size_t per = multi_per_thread(g);
    const int64_t x_image = (blocked ? (g->c + 15) / 16 * 16 : g->c) * g->h * g->w;
    int par = cpu_par(nthreads, g->n * g->k * g->p * g->q * g->c);
    CPU_FOR(par, img, g->n, {
        float *xpad = per_thread + (size_t)omp_get_thread_num() * per;
        multi_image(g, x + img * x_image, blocked, wp, b, relu, acc, y + img * g->k * g->p * g->q,
                    xpad, xpad + g->c * multi_stride(g));
    });
}
#endif

void cpu_conv_direct_multi_forward(int nthreads, const nm_conv_geom *g, const float *x,
                                   const float *w, const float *b, neat_activation act, float *y,
                                   float *scratch) {
#if defined(__x86_64__) && defined(__GNUC__)
    float *wp = scratch;
    for (int64_t k = 0; k < g->k; k++) /* w [K][C][9] -> wp [K/8][C][9][8] */
        for (int64_t c = 0; c < g->c; c++)
            for (int t = 0; t < 9; t++)
                wp[((k / MULTI_KB * g->c + c) * 9 + t) * MULTI_KB + k % MULTI_KB] =
                    w[(k * g->c + c) * 9 + t];
    multi_run(nthreads, g, x, 0, b, act == NEAT_ACT_RELU, 0, y, scratch);
#else
    (void)nthreads, (void)g, (void)x, (void)w, (void)b, (void)act, (void)y, (void)scratch;
#endif
}

/* ---- the backward data of the same convolutions, by the same loop ----------------------
 *
 *   dx[n,c,h,w] = sum_k sum_{i,j < 3} w[k,c,i,j] dz[n, k, h + ph - i, w + pw - j]
 *               = sum_k sum_{i,j < 3} w[k,c,2-i,2-j] dzpad[n, k, h + i, w + j]
 *
 * with dz padded by 2 - ph rows and 2 - pw columns: the forward loop's convolution of dz (K
 * channels of P x Q) by the filters turned, [C][K][9] with tap t taking w's tap 8 - t, no
 * bias, into dx (C planes of H x W). dz may be NCHW, or nChw16c as relu_grad_blocked.c
 * writes it for oneDNN's backward filter. Each dx is the sum over k of the 9 products in
 * tap order (then + 0, then added to dx when accumulating). Why: oneDNN 2.6's backward
 * data of LeNet's conv2 on the development VM took about as long as its forward (5.5 against
 * 5.1 ms at batch 128, docs/BENCHMARKS.md), plus a reorder of dx back to NCHW. */
static nm_conv_geom dx_geom(const nm_conv_geom *g) {
    nm_conv_geom t = *g;
    t.c = g->k, t.h = g->p, t.w = g->q;
    t.k = g->c, t.p = g->h, t.q = g->w;
    t.ph = 2 - g->ph, t.pw = 2 - g->pw;
    return t;
}

int cpu_conv_direct_dx_ok(const nm_conv_geom *g) {
    if (g->nhwc || g->groups != 1 || g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 ||
        g->dh != 1 || g->dw != 1 || g->ph > 2 || g->pw > 2 || g->n < 1)
        return 0;
    nm_conv_geom t = dx_geom(g);
    return cpu_conv_direct_multi_ok(&t, NEAT_ACT_NONE);
}

size_t cpu_conv_direct_dx_scratch(const nm_conv_geom *g, int nthreads) {
    nm_conv_geom t = dx_geom(g);
    return cpu_conv_direct_multi_scratch(&t, nthreads);
}

void cpu_conv_direct_dx(int nthreads, const nm_conv_geom *g, const float *dz, int blocked,
                        const float *w, int acc, float *dx, float *scratch) {
#if defined(__x86_64__) && defined(__GNUC__)
    nm_conv_geom t = dx_geom(g);
    float *wp = scratch;
    for (int64_t c = 0; c < g->c; c++) /* w [K][C][9] turned -> wp [C/8][K][9][8] */
        for (int64_t k = 0; k < g->k; k++)
            for (int i = 0; i < 9; i++)
                wp[((c / MULTI_KB * g->k + k) * 9 + i) * MULTI_KB + c % MULTI_KB] =
                    w[(k * g->c + c) * 9 + 8 - i];
    multi_run(nthreads, &t, dz, blocked, NULL, 0, acc, dx, scratch);
#else
    (void)nthreads, (void)g, (void)dz, (void)blocked, (void)w, (void)acc, (void)dx, (void)scratch;
#endif
}
