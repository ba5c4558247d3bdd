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
    return g->c == g->groups && g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 &&
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
