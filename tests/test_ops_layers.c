/*
 * test_ops_layers.c — forward conformance of the reducing ops of a layer (matmul,
 * matmul_batched, linear_forward, conv2d_forward) and of maxpool2d on every backend,
 * against the float64 reference (reference.c).
 *
 * Three passes per device:
 *   strict  random float inputs, the DESIGN.md tolerances: matmul/linear/conv
 *           |got-ref| <= (2K+4) 2^-24 (|A||B|)_ij (K the reduction length; +4 covers the
 *           alpha, beta and bias roundings) and relative Frobenius <= 1e-5; smooth
 *           activations add 1e-5 |y| + 4 2^-24 (1+|z|); maxpool exact.
 *   int     integer inputs in [-4,4]: matmul, matmul_batched, linear and conv (none and
 *           relu) must be bit-exact (every partial sum is an exact float).
 *   tf32    always run, after neat_device_set_math_mode(TF32): matmul, matmul_batched,
 *           linear, conv with relative Frobenius <= 2e-3 (the CPU stays float32).
 * Every case writes NaN into its outputs first, reads them back through guarded host
 * buffers, and reads its inputs back to check they are bit for bit unchanged. Each case has
 * its own seed, derived from a base seed (NEATML_TEST_SEED overrides; printed at start);
 * a failure prints the seed and the shape. Sums, softmax and the elementwise ops are in
 * test_ops_elementwise.c.
 */
#include "harness.h"
#include "reference.h"
#include "util_ops.h"

#include <math.h>
#include <stdlib.h>

/* Largest slope of each activation: how far an error of z moves act(z). */
static double act_slope(neat_activation act) {
    return act == NEAT_ACT_SIGMOID ? 0.25 : act == NEAT_ACT_GELU ? 1.13 : 1.0;
}

/* Check a matmul-like output y = act(z), z a k-term dot product with error scale abs[i].
 * Per mode: int bit-exact; tf32 relative Frobenius 2e-3; strict the per-element bound plus
 * the activation's own error, and relative Frobenius 1e-5. */
static void check_gemm(ctx *c, const char *name, const float *got, const double *ref,
                       const double *z, const double *abs, int64_t n, int64_t k,
                       neat_activation act) {
    if (c->mode == MODE_INT) {
        ops_compare(c, name, got, ref, NULL, 0, n, -1);
        return;
    }
    if (c->mode == MODE_TF32) {
        ops_compare(c, name, got, ref, NULL, 1, n, 2e-3);
        return;
    }
    double *tol = ops_dnew(n);
    for (int64_t i = 0; i < n; i++) {
        tol[i] = act_slope(act) * (2.0 * (double)k + 4) * EPS * abs[i];
        if (ops_act_smooth(act)) tol[i] += 1e-5 * fabs(ref[i]) + 4 * EPS * (1 + fabs(z[i]));
    }
    ops_compare(c, name, got, ref, tol, 0, n, 1e-5);
    free(tol);
}

/* ---- matmul and matmul_batched ------------------------------------------------------- */

static void alpha_beta(const ctx *c, int idx, float *alpha, float *beta) {
    static const float flt[][2] = {{1, 0}, {1, 1}, {0.5f, -1.5f}, {-2, 0.25f}, {1.3f, 0}};
    static const float ints[][2] = {{1, 0}, {1, 1}, {2, -1}, {-1, 3}};
    if (c->mode == MODE_INT) {
        *alpha = ints[idx % 4][0];
        *beta = ints[idx % 4][1];
    } else {
        *alpha = flt[idx % 5][0];
        *beta = flt[idx % 5][1];
    }
}

/* batch == 0: neat_matmul on 2-D tensors; otherwise neat_matmul_batched on 3-D ones. */
static void matmul_case(ctx *c, int idx, int64_t batch, int64_t m, int64_t n, int64_t k,
                        int ta, int tb) {
    float alpha, beta;
    alpha_beta(c, idx, &alpha, &beta);
    nt_rng r = ops_case_begin(c, idx,
                              "batch=%lld m=%lld n=%lld k=%lld ta=%d tb=%d alpha=%g beta=%g",
                              (long long)batch, (long long)m, (long long)n, (long long)k, ta, tb,
                              alpha, beta);
    int nd = batch ? 3 : 2, o = batch ? 1 : 0;
    int64_t as[3] = {batch}, bs[3] = {batch}, cs[3] = {batch};
    as[o] = ta ? k : m, as[o + 1] = ta ? m : k;
    bs[o] = tb ? n : k, bs[o + 1] = tb ? k : n;
    cs[o] = m, cs[o + 1] = n;
    ht A = {0}, B = {0}, C = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &A, nd, as, ops_in_fill(c), &r) && ht_make(c, &B, nd, bs, ops_in_fill(c), &r) &&
        ht_make(c, &C, nd, cs, beta == 0 ? F_NAN : ops_in_fill(c), &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, batch ? neat_matmul_batched(cb, A.t, B.t, C.t, alpha, beta, ta, tb)
                             : neat_matmul(cb, A.t, B.t, C.t, alpha, beta, ta, tb))) {
        float *got = ht_read(c, &C, "c");
        double *a = ops_to_double(A.v, A.n);
        double *b = ops_to_double(B.v, B.n), *ref = ops_to_double(C.v, C.n);
        double *abs = ops_dnew(C.n);
        ref_matmul_batched(a, b, ref, abs, batch ? batch : 1, m, n, k, alpha, beta, ta, tb);
        check_gemm(c, "c", got, ref, ref, abs, C.n, k, NEAT_ACT_NONE);
        ht_unchanged(c, &A, "a");
        ht_unchanged(c, &B, "b");
        free(a), free(b), free(ref), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&A), ht_free(&B), ht_free(&C);
    ops_case_end(c);
}

static void test_matmul(ctx *c) {
    static const int64_t table[][5] = {
        /* m, n, k, trans_a, trans_b */
        {1, 1, 1, 0, 0},       {0, 5, 3, 0, 0},      {5, 0, 3, 1, 0},     {4, 6, 0, 0, 1},
        {3, 7, 13, 0, 0},      {7, 13, 31, 1, 0},    {13, 31, 7, 0, 1},   {31, 3, 127, 1, 1},
        {63, 65, 129, 0, 0},   {65, 63, 127, 1, 0},  {129, 127, 65, 0, 1}, {255, 1, 257, 0, 0},
        {1, 257, 255, 1, 1},   {64, 64, 64, 0, 0},   {2, 3, 5, 1, 1},     {127, 129, 63, 1, 1}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 1, "matmul");
    for (; idx < nt; idx++)
        matmul_case(c, idx, 0, table[idx][0], table[idx][1], table[idx][2], (int)table[idx][3],
                    (int)table[idx][4]);
    nt_rng draw = {c->base_seed + 101};
    while (idx < 26) {
        int64_t m = ops_draw_size(&draw, 13);
        int64_t n = ops_draw_size(&draw, 13), k = ops_draw_size(&draw, 13);
        if (m * n * k > 2200000) continue;
        matmul_case(c, idx++, 0, m, n, k, (int)nt_randint(&draw, 0, 1),
                    (int)nt_randint(&draw, 0, 1));
    }
    ops_end(c);

    static const int64_t btable[][4] = {
        /* batch, m, n, k */
        {1, 1, 1, 1},  {0, 3, 4, 5},   {3, 0, 4, 5},    {2, 7, 13, 0},  {3, 7, 13, 31},
        {5, 31, 7, 13}, {2, 63, 65, 129}, {7, 1, 127, 3}, {4, 65, 1, 63}, {2, 129, 31, 64},
        {13, 3, 3, 3}, {1, 127, 2, 257}};
    nt = (int)(sizeof btable / sizeof btable[0]);
    ops_begin(c, 2, "matmul_batched");
    for (idx = 0; idx < nt; idx++)
        matmul_case(c, idx, btable[idx][0], btable[idx][1], btable[idx][2], btable[idx][3],
                    idx % 2, (idx / 2) % 2);
    while (idx < 24) {
        int64_t b = OPS_SIZES[nt_randint(&draw, 1, 5)], m = ops_draw_size(&draw, 11),
                n = ops_draw_size(&draw, 11), k = ops_draw_size(&draw, 11);
        if (b * m * n * k > 1500000) continue;
        matmul_case(c, idx++, b, m, n, k, (int)nt_randint(&draw, 0, 1),
                    (int)nt_randint(&draw, 0, 1));
    }
    ops_end(c);
}

/* ---- linear_forward -------------------------------------------------------------------- */

static void linear_case(ctx *c, int idx, int64_t n, int64_t in, int64_t out, int bias,
                        neat_activation act) {
    nt_rng r = ops_case_begin(c, idx, "n=%lld in=%lld out=%lld bias=%d act=%d", (long long)n,
                              (long long)in, (long long)out, bias, (int)act);
    ht X = {0}, W = {0}, Bv = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    int ok = ht_make(c, &X, 2, (int64_t[]){n, in}, ops_in_fill(c), &r) &&
             ht_make(c, &W, 2, (int64_t[]){out, in}, ops_in_fill(c), &r) &&
             (!bias || ht_make(c, &Bv, 1, (int64_t[]){out}, ops_in_fill(c), &r)) &&
             ht_make(c, &Y, 2, (int64_t[]){n, out}, F_NAN, &r) &&
             EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create");
    if (ok && ops_run(c, cb, neat_linear_forward(cb, act, X.t, W.t, Bv.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = ops_to_double(X.v, X.n), *w = ops_to_double(W.v, W.n);
        double *b = bias ? ops_to_double(Bv.v, Bv.n) : NULL;
        double *y = ops_dnew(Y.n), *z = ops_dnew(Y.n),
               *abs = ops_dnew(Y.n);
        ref_linear_forward(x, w, b, act, y, z, abs, n, in, out);
        check_gemm(c, "y", got, y, z, abs, Y.n, in + 1, act);
        ht_unchanged(c, &X, "x");
        ht_unchanged(c, &W, "w");
        if (bias) ht_unchanged(c, &Bv, "b");
        free(x), free(w), free(b), free(y), free(z), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&W), ht_free(&Bv), ht_free(&Y);
    ops_case_end(c);
}

/* The activations a pass may fuse: the int pass only those that keep integers exact. */
static neat_activation pick_act(const ctx *c, int idx) {
    return c->mode == MODE_INT ? (neat_activation)(idx % 2) : (neat_activation)(idx % 5);
}

static void test_linear(ctx *c) {
    static const int64_t table[][3] = {
        /* n, in, out */
        {1, 1, 1},    {0, 3, 4},    {3, 0, 4},     {3, 4, 0},    {7, 13, 31},  {13, 31, 7},
        {64, 127, 10}, {31, 65, 63}, {128, 63, 129}, {1, 257, 255}, {255, 3, 1},  {65, 64, 65},
        {2, 129, 127}, {5, 7, 3},    {129, 31, 13}, {3, 255, 2}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 3, "linear_forward");
    /* Every activation with and without bias on the table, then random draws. */
    for (; idx < nt; idx++)
        linear_case(c, idx, table[idx][0], table[idx][1], table[idx][2], (idx / 5) % 2 == 0,
                    pick_act(c, idx));
    nt_rng draw = {c->base_seed + 103};
    while (idx < 30) {
        int64_t n = ops_draw_size(&draw, 12);
        int64_t in = ops_draw_size(&draw, 13), out = ops_draw_size(&draw, 13);
        if (n * in * out > 2000000) continue;
        linear_case(c, idx, n, in, out, (int)nt_randint(&draw, 0, 1), pick_act(c, idx));
        idx++;
    }
    ops_end(c);
}

/* ---- conv2d_forward ----------------------------------------------------------------------- */

/* "x=2x3x7x7 kernel=3x3 stride=1x1 pad=1x1": the geometry of a conv or pool case. */
static dims_str conv_str(const ref_conv_shape *s) {
    dims_str d;
    snprintf(d.s, sizeof d.s,
             "x=%lldx%lldx%lldx%lld kernel=%lldx%lld stride=%lldx%lld pad=%lldx%lld",
             (long long)s->n, (long long)s->c, (long long)s->h, (long long)s->w, (long long)s->kh,
             (long long)s->kw, (long long)s->sh, (long long)s->sw, (long long)s->ph,
             (long long)s->pw);
    return d;
}

static void conv_case(ctx *c, int idx, const ref_conv_shape *s, int bias, neat_activation act) {
    nt_rng r = ops_case_begin(c, idx, "%s k=%lld dil=%lldx%lld groups=%lld bias=%d act=%d",
                              conv_str(s).s, (long long)s->k, (long long)s->dh, (long long)s->dw,
                              (long long)s->groups, bias, (int)act);
    int64_t p = ref_conv_out(s->h, s->kh, s->sh, s->ph, s->dh);
    int64_t q = ref_conv_out(s->w, s->kw, s->sw, s->pw, s->dw);
    neat_conv2d_desc d = {s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->dh, s->dw, s->groups};
    ht X = {0}, W = {0}, Bv = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    int ok = ht_make(c, &X, 4, (int64_t[]){s->n, s->c, s->h, s->w}, ops_in_fill(c), &r) &&
             ht_make(c, &W, 4, (int64_t[]){s->k, s->c / s->groups, s->kh, s->kw}, ops_in_fill(c),
                     &r) &&
             (!bias || ht_make(c, &Bv, 1, (int64_t[]){s->k}, ops_in_fill(c), &r)) &&
             ht_make(c, &Y, 4, (int64_t[]){s->n, s->k, p, q}, F_NAN, &r) &&
             EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create");
    if (ok && ops_run(c, cb, neat_conv2d_forward(cb, &d, act, X.t, W.t, Bv.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = ops_to_double(X.v, X.n), *w = ops_to_double(W.v, W.n);
        double *b = bias ? ops_to_double(Bv.v, Bv.n) : NULL;
        double *y = ops_dnew(Y.n), *z = ops_dnew(Y.n),
               *abs = ops_dnew(Y.n);
        ref_conv2d_forward(s, x, w, b, act, y, z, abs);
        check_gemm(c, "y", got, y, z, abs, Y.n, s->c / s->groups * s->kh * s->kw + 1, act);
        ht_unchanged(c, &X, "x");
        ht_unchanged(c, &W, "w");
        if (bias) ht_unchanged(c, &Bv, "b");
        free(x), free(w), free(b), free(y), free(z), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&W), ht_free(&Bv), ht_free(&Y);
    ops_case_end(c);
}

static void test_conv(ctx *c) {
    static const ref_conv_shape table[] = {
        /* n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups */
        {1, 1, 5, 5, 1, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* batch 1, no padding */
        {2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* padding 1 */
        {2, 3, 13, 13, 5, 3, 3, 2, 2, 1, 1, 1, 1, 1},   /* stride 2 */
        {1, 4, 13, 7, 6, 3, 3, 1, 1, 0, 0, 2, 2, 1},    /* dilation 2 */
        {2, 6, 9, 9, 9, 3, 3, 1, 1, 1, 1, 1, 1, 3},     /* 3 groups */
        {1, 8, 11, 11, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},   /* depthwise */
        {2, 16, 7, 7, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},   /* 1x1 */
        {1, 3, 31, 31, 7, 5, 5, 2, 2, 2, 2, 1, 1, 1},   /* 5x5 stride 2 pad 2 */
        {2, 5, 13, 9, 3, 3, 1, 2, 1, 1, 0, 1, 1, 1},    /* asymmetric */
        {0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* empty batch */
        {1, 2, 2, 2, 3, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* kernel over the whole padded input */
        {2, 4, 17, 17, 6, 3, 3, 2, 2, 1, 1, 2, 2, 2},   /* stride, pad, dilation and groups */
        {3, 1, 28, 28, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* LeNet's first layer */
        {1, 32, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* LeNet's second layer */
        {1, 3, 5, 5, 0, 3, 3, 1, 1, 1, 1, 1, 1, 1},     /* no filters */
        {1, 7, 1, 1, 13, 1, 1, 1, 1, 0, 0, 1, 1, 1},    /* 1x1 image */
    };
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 4, "conv2d_forward");
    for (; idx < nt; idx++) conv_case(c, idx, &table[idx], idx % 3 != 2, pick_act(c, idx));
    nt_rng draw = {c->base_seed + 107};
    static const int64_t hw[] = {1, 3, 7, 13, 16, 31};
    while (idx < 30) {
        ref_conv_shape s = {0};
        s.groups = nt_randint(&draw, 1, 3);
        s.n = nt_randint(&draw, 1, 3);
        s.c = s.groups * OPS_SIZES[nt_randint(&draw, 1, 4)];
        s.k = s.groups * OPS_SIZES[nt_randint(&draw, 1, 4)];
        s.kh = nt_randint(&draw, 1, 5), s.kw = nt_randint(&draw, 1, 5);
        s.sh = nt_randint(&draw, 1, 3), s.sw = nt_randint(&draw, 1, 3);
        s.dh = nt_randint(&draw, 1, 2), s.dw = nt_randint(&draw, 1, 2);
        /* padding below the dilated extent, at most 2 */
        int64_t eh = s.dh * (s.kh - 1) + 1, ew = s.dw * (s.kw - 1) + 1;
        s.ph = nt_randint(&draw, 0, eh - 1 < 2 ? eh - 1 : 2);
        s.pw = nt_randint(&draw, 0, ew - 1 < 2 ? ew - 1 : 2);
        s.h = hw[nt_randint(&draw, 0, 5)], s.w = hw[nt_randint(&draw, 0, 5)];
        int64_t p = ref_conv_out(s.h, s.kh, s.sh, s.ph, s.dh);
        int64_t q = ref_conv_out(s.w, s.kw, s.sw, s.pw, s.dw);
        if (p < 1 || q < 1 || s.n * s.k * p * q * s.c / s.groups * s.kh * s.kw > 2000000)
            continue;
        conv_case(c, idx, &s, (int)nt_randint(&draw, 0, 1), pick_act(c, idx));
        idx++;
    }
    ops_end(c);
}

/* ---- maxpool2d ----------------------------------------------------------------------------- */

static void maxpool_case(ctx *c, int idx, const ref_conv_shape *s) {
    nt_rng r = ops_case_begin(c, idx, "%s", conv_str(s).s);
    int64_t p = ref_conv_out(s->h, s->kh, s->sh, s->ph, 1);
    int64_t q = ref_conv_out(s->w, s->kw, s->sw, s->pw, 1);
    neat_pool2d_desc d = {s->kh, s->kw, s->sh, s->sw, s->ph, s->pw};
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    /* Half the cases all negative: padding counted as 0 instead of -inf would show. */
    if (ht_make(c, &X, 4, (int64_t[]){s->n, s->c, s->h, s->w}, idx % 2 ? F_NEG : F_UNIFORM, &r) &&
        ht_make(c, &Y, 4, (int64_t[]){s->n, s->c, p, q}, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, neat_maxpool2d(cb, &d, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = ops_to_double(X.v, X.n), *y = ops_dnew(Y.n);
        ref_maxpool2d(s, x, y);
        ops_compare(c, "y", got, y, NULL, 0, Y.n, -1);
        ht_unchanged(c, &X, "x");
        free(x), free(y), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    ops_case_end(c);
}

static void test_maxpool(ctx *c) {
    static const ref_conv_shape table[] = {
        /* n, c, h, w, k, kh, kw, sh, sw, ph, pw (dilation 1) */
        {1, 1, 4, 4, 1, 2, 2, 2, 2, 0, 0, 1, 1, 1},    {2, 3, 7, 7, 3, 2, 2, 2, 2, 0, 0, 1, 1, 1},
        {2, 3, 13, 13, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1},  {1, 2, 9, 9, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1},
        {1, 3, 5, 5, 3, 1, 1, 1, 1, 0, 0, 1, 1, 1},    {1, 2, 31, 31, 2, 3, 3, 3, 3, 0, 0, 1, 1, 1},
        {2, 2, 7, 13, 2, 2, 2, 1, 1, 0, 0, 1, 1, 1},   {1, 3, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
        {0, 3, 8, 8, 3, 2, 2, 2, 2, 0, 0, 1, 1, 1},    {1, 2, 9, 9, 2, 5, 5, 2, 2, 2, 2, 1, 1, 1},
        {2, 16, 56, 56, 16, 2, 2, 2, 2, 0, 0, 1, 1, 1}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},
        {3, 7, 2, 2, 7, 2, 2, 2, 2, 1, 1, 1, 1, 1},    {1, 5, 65, 63, 5, 3, 3, 2, 2, 0, 1, 1, 1, 1},
    };
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 5, "maxpool2d");
    for (; idx < nt; idx++) maxpool_case(c, idx, &table[idx]);
    nt_rng draw = {c->base_seed + 109};
    while (idx < 26) {
        ref_conv_shape s = {0};
        s.n = nt_randint(&draw, 1, 3), s.c = OPS_SIZES[nt_randint(&draw, 1, 5)];
        s.h = OPS_SIZES[nt_randint(&draw, 1, 9)], s.w = OPS_SIZES[nt_randint(&draw, 1, 9)];
        s.kh = nt_randint(&draw, 1, 4), s.kw = nt_randint(&draw, 1, 4);
        s.sh = nt_randint(&draw, 1, 3), s.sw = nt_randint(&draw, 1, 3);
        s.ph = nt_randint(&draw, 0, s.kh / 2), s.pw = nt_randint(&draw, 0, s.kw / 2);
        s.k = s.c, s.dh = s.dw = s.groups = 1;
        if (ref_conv_out(s.h, s.kh, s.sh, s.ph, 1) < 1 ||
            ref_conv_out(s.w, s.kw, s.sw, s.pw, 1) < 1)
            continue;
        maxpool_case(c, idx++, &s);
    }
    ops_end(c);
}

/* ---- driver -------------------------------------------------------------------------------- */

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    /* the same default base as test_ops_elementwise.c */
    uint64_t base = nt_seed_base("ops_layers", 20240611);
    for (int d = 0; d < ndev; d++) {
        ctx c = {.dev = devs[d], .dev_name = names[d], .base_seed = base, .mode = MODE_STRICT};
        test_matmul(&c);
        test_linear(&c);
        test_conv(&c);
        test_maxpool(&c);

        c.mode = MODE_INT;
        test_matmul(&c);
        test_linear(&c);
        test_conv(&c);

        /* TF32 pass, always: a CPU device accepts the mode and stays float32. */
        c.mode = MODE_TF32;
        neat_status st = neat_device_set_math_mode(devs[d], NEAT_MATH_TF32);
        CHECK(st == NEAT_OK, "%s: neat_device_set_math_mode(TF32): %s (%s)", names[d],
              neat_status_string(st), neat_last_error());
        if (st == NEAT_OK) {
            test_matmul(&c);
            test_linear(&c);
            test_conv(&c);
        }
        st = neat_device_set_math_mode(devs[d], NEAT_MATH_STRICT);
        CHECK(st == NEAT_OK, "%s: set_math_mode(STRICT): %s", names[d], neat_status_string(st));
    }
    nt_close_devices(devs, ndev);
    return nt_finish("ops_layers");
}
