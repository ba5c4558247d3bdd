/*
 * test_backward.c — the backward ops of every device against the float64 references
 * (reference_train.c); the references themselves are checked in test_optim.c.
 *
 *  1. Each backward op of the library (linear, conv2d, maxpool2d, activation, softmax)
 *     against the reference, at 4x the forward tolerance: per element |got - ref| <= 4
 *     (2 K 2^-24 sum|A||B| + propagated input error), and a relative Frobenius error
 *     <= 4e-5. Outputs are poisoned with NaN before each run.
 *  2. Softmax cross-entropy forward/backward, with logits of +-1000 and a bad label.
 * Seeds: NEATML_TEST_SEED overrides the base; each case prints its seed when it fails.
 */
#include "harness.h"
#include "reference.h"
#include "reference_train.h"
#include "util_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The base shared with test_optim.c: each family adds its own offset (1000, 2000, ...,
 * 8000), so one NEATML_TEST_SEED names the same cases in both binaries. */
static uint64_t g_seed = 0x5eed7a1full;

/* ---- host helpers ------------------------------------------------------------------------- */

static void round_to_float(double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)v[i];
}

static void absv(const double *v, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fabs(v[i]);
}

/* Backward tolerance of a matmul-shaped gradient: 4 (2 K eps |A||B| + err) where abs is the
 * reference run on absolute values and err the reference run on the input error bound; with
 * accumulate the final addition to prev adds a rounding of |prev| + |ref|. */
static void grad_tol(double *tol, const double *abs, const double *err, const double *prev,
                     const double *ref, int64_t n, int64_t k, int accumulate) {
    for (int64_t i = 0; i < n; i++) {
        tol[i] = 4.0 * (2.0 * (double)k * EPS32 * abs[i] + err[i]) + 1e-37;
        if (accumulate) tol[i] += 4.0 * EPS32 * (fabs(prev[i]) + fabs(ref[i]));
    }
}

/* |error| bound of dz = dy act'(.) computed in float from y (or, for gelu, from a
 * pre-activation z recomputed in float with error zerr). gelu'' is bounded by 0.8. */
static double dz_error(neat_activation act, double dy, double z, double y, double zerr,
                       double dz) {
    switch (act) {
    case NEAT_ACT_SIGMOID: return 4 * EPS32 * fabs(dz);
    case NEAT_ACT_TANH: return 4 * EPS32 * fabs(dz) + 2 * EPS32 * y * y * fabs(dy);
    case NEAT_ACT_GELU:
        return fabs(dy) * (zerr + 16 * EPS32 * (1 + fabs(z) + 0.14 * fabs(z * z * z)));
    default: return 0; /* relu and none: dz is dy or 0, exactly */
    }
}

/* ======== 1. backward ops of the library against the references ========================= */

/* One gradient output: host arrays and its device tensor (NULL when not requested). */
typedef struct grad_out {
    const char *name;
    int64_t size, k; /* elements; length of the reduction that produces each one */
    double *prev, *ref, *got, *tol, *abs, *err;
    neat_tensor *t;
} grad_out;

static void grad_init(grad_out *g, arena *a, const char *name, int64_t size, int64_t k) {
    g->name = name, g->size = size, g->k = k, g->t = NULL;
    g->prev = tr_anew(a, size), g->ref = tr_anew(a, size), g->got = tr_anew(a, size);
    g->tol = tr_anew(a, size), g->abs = tr_anew(a, size), g->err = tr_anew(a, size);
}

/* Before a run: previous contents (random when accumulating, else NaN) into the tensor and
 * into ref, which the reference then overwrites or adds to. */
static void grad_prepare(tcase *c, grad_out *g, nt_rng *rng, int accumulate) {
    if (!g->t) return;
    if (accumulate) tr_rand_fill(rng, g->prev, g->size, -1, 1);
    memcpy(g->ref, g->prev, sizeof(double) * (size_t)g->size);
    tr_upload(c, g->t, accumulate ? g->prev : NULL, g->size);
}

static void grad_check(tcase *c, grad_out *g, int accumulate) {
    if (!g->t) return;
    grad_tol(g->tol, g->abs, g->err, g->prev, g->ref, g->size, g->k, accumulate);
    if (tr_download(c, g->t, g->got, g->size))
        tr_compare(c, g->name, g->got, g->ref, g->tol, g->size, 4e-5);
}

typedef struct lin_case { int64_t n, in, out; } lin_case;

/* mask: bit 0 dx, bit 1 dw, bit 2 db. Runs twice from one recording (a replay with new dy
 * and new previous contents). */
static void linear_case(neat_device *dev, const char *dname, lin_case s, neat_activation act,
                        int has_b, int mask, int acc, uint64_t seed) {
    char ctx[200];
    snprintf(ctx, sizeof ctx, "%s linear_backward n=%lld in=%lld out=%lld act=%s bias=%d grads=%s%s%s acc=%d seed=%#llx",
             dname, (long long)s.n, (long long)s.in, (long long)s.out, tr_act_name(act), has_b,
             mask & 1 ? "x" : "", mask & 2 ? "w" : "", mask & 4 ? "b" : "", acc,
             (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    int64_t nx = s.n * s.in, nw = s.out * s.in, ny = s.n * s.out;
    double *x = tr_anew(&a, nx), *w = tr_anew(&a, nw);
    double *b = tr_anew(&a, s.out), *y = tr_anew(&a, ny);
    double *z = tr_anew(&a, ny), *zabs = tr_anew(&a, ny);
    double *dy = tr_anew(&a, ny), *dz = tr_anew(&a, ny);
    double *dzabs = tr_anew(&a, ny), *dzerr = tr_anew(&a, ny);
    double *xa = tr_anew(&a, nx), *wa = tr_anew(&a, nw);
    grad_out gx, gw, gb;
    grad_init(&gx, &a, "dx", nx, s.out);
    grad_init(&gw, &a, "dw", nw, s.n);
    grad_init(&gb, &a, "db", s.out, s.n);
    tr_rand_fill(&rng, x, nx, -1, 1), tr_rand_fill(&rng, w, nw, -1, 1);
    tr_rand_fill(&rng, b, s.out, -1, 1);
    absv(x, xa, nx), absv(w, wa, nw);
    /* The saved output is what a float forward would store: the reference rounded. */
    ref_linear_forward(x, w, has_b ? b : NULL, act, y, z, zabs, s.n, s.in, s.out);
    round_to_float(y, ny);

    int64_t shx[2] = {s.n, s.in}, shw[2] = {s.out, s.in}, shb[1] = {s.out}, shy[2] = {s.n, s.out};
    neat_tensor *X = tr_mk(&c, 2, shx, x), *W = tr_mk(&c, 2, shw, w);
    neat_tensor *B = has_b ? tr_mk(&c, 1, shb, b) : NULL, *Y = tr_mk(&c, 2, shy, y);
    neat_tensor *DY = tr_mk(&c, 2, shy, NULL);
    if (mask & 1) gx.t = tr_mk(&c, 2, shx, NULL);
    if (mask & 2) gw.t = tr_mk(&c, 2, shw, NULL);
    if (mask & 4) gb.t = tr_mk(&c, 1, shb, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
        /* relu/sigmoid/tanh read y; none and gelu must work without it */
        int needs_y = act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
        neat_status st = neat_linear_backward(cb, act, X, W, B, needs_y ? Y : NULL, DY, gx.t,
                                              gw.t, gb.t, acc);
        if (CHECK_OK(st, ctx))
            for (int rep = 0; rep < 2 && !c.failed; rep++) {
                tr_rand_fill(&rng, dy, ny, -1, 1);
                tr_upload(&c, DY, dy, ny);
                grad_prepare(&c, &gx, &rng, acc), grad_prepare(&c, &gw, &rng, acc);
                grad_prepare(&c, &gb, &rng, acc);
                ref_linear_backward(x, w, has_b ? b : NULL, y, dy, act, s.n, s.in, s.out,
                                    gx.t ? gx.ref : NULL, gw.t ? gw.ref : NULL,
                                    gb.t ? gb.ref : NULL, acc);
                /* error bounds: the references run on |dz| and on dz's own error */
                ref_activation_backward(act, z, y, dy, dz, ny);
                for (int64_t i = 0; i < ny; i++) {
                    double zerr = 2.0 * (double)s.in * EPS32 * zabs[i];
                    dzerr[i] = dz_error(act, dy[i], z[i], y[i], zerr, dz[i]);
                    dzabs[i] = fabs(dz[i]);
                }
                ref_linear_backward(xa, wa, NULL, NULL, dzabs, NEAT_ACT_NONE, s.n, s.in, s.out,
                                    gx.abs, gw.abs, gb.abs, 0);
                ref_linear_backward(xa, wa, NULL, NULL, dzerr, NEAT_ACT_NONE, s.n, s.in, s.out,
                                    gx.err, gw.err, gb.err, 0);
                if (c.failed || !tr_run(&c, cb)) break;
                grad_check(&c, &gx, acc), grad_check(&c, &gw, acc), grad_check(&c, &gb, acc);
            }
    }
    neat_cmdbuf_destroy(cb);
    tr_case_free(&c);
    tr_afree(&a);
}

static void test_linear_backward(neat_device *dev, const char *dname) {
    /* 1, primes, 2^k +- 1 */
    static const lin_case shapes[] = {{1, 1, 1},   {2, 3, 5},    {7, 13, 17}, {17, 33, 31},
                                      {64, 65, 63}, {3, 257, 10}, {33, 2, 129}};
    static const int masks[] = {7, 1, 6, 2, 4, 7, 3};
    int idx = 0;
    for (int act = 0; act <= NEAT_ACT_GELU; act++)
        for (int i = 0; i < 7; i++, idx++) {
            int mask = masks[(i + act) % 7], acc = (i + act) & 1;
            int has_b = (mask & 4) || (i + act) % 3 != 2;
            linear_case(dev, dname, shapes[i], (neat_activation)act, has_b, mask, acc,
                        g_seed + 1000 + (uint64_t)idx);
        }
}

typedef struct conv_case {
    int64_t n, c, h, w, k, kh, kw, stride, pad, dil, groups;
    neat_activation act;
    int has_b, mask, acc;
} conv_case;

static void conv_case_run(neat_device *dev, const char *dname, const conv_case *s,
                          uint64_t seed) {
    char ctx[240];
    snprintf(ctx, sizeof ctx, "%s conv2d_backward x=%lldx%lldx%lldx%lld k=%lld %lldx%lld stride=%lld pad=%lld dil=%lld groups=%lld act=%s bias=%d grads=%s%s%s acc=%d seed=%#llx",
             dname, (long long)s->n, (long long)s->c, (long long)s->h, (long long)s->w,
             (long long)s->k, (long long)s->kh, (long long)s->kw, (long long)s->stride,
             (long long)s->pad, (long long)s->dil, (long long)s->groups, tr_act_name(s->act),
             s->has_b, s->mask & 1 ? "x" : "", s->mask & 2 ? "w" : "", s->mask & 4 ? "b" : "",
             s->acc, (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    neat_conv2d_desc d = {s->kh, s->kw, s->stride, s->stride, s->pad, s->pad, s->dil, s->dil,
                          s->groups};
    ref_conv_shape rs = {s->n, s->c, s->h, s->w, s->k, s->kh, s->kw, s->stride, s->stride,
                         s->pad, s->pad, s->dil, s->dil, s->groups};
    int64_t P = ref_train_conv_out_size(s->h, s->kh, s->stride, s->pad, s->dil);
    int64_t Q = ref_train_conv_out_size(s->w, s->kw, s->stride, s->pad, s->dil);
    int64_t cg = s->c / s->groups;
    int64_t nx = s->n * s->c * s->h * s->w, nw = s->k * cg * s->kh * s->kw;
    int64_t ny = s->n * s->k * P * Q;
    double *x = tr_anew(&a, nx), *w = tr_anew(&a, nw), *b = tr_anew(&a, s->k), *y = tr_anew(&a, ny);
    double *z = tr_anew(&a, ny), *zabs = tr_anew(&a, ny);
    double *dy = tr_anew(&a, ny), *dz = tr_anew(&a, ny);
    double *dzabs = tr_anew(&a, ny), *dzerr = tr_anew(&a, ny);
    double *xa = tr_anew(&a, nx), *wa = tr_anew(&a, nw);
    grad_out gx, gw, gb;
    grad_init(&gx, &a, "dx", nx, (s->k / s->groups) * s->kh * s->kw);
    grad_init(&gw, &a, "dw", nw, s->n * P * Q);
    grad_init(&gb, &a, "db", s->k, s->n * P * Q);
    tr_rand_fill(&rng, x, nx, -1, 1), tr_rand_fill(&rng, w, nw, -1, 1);
    tr_rand_fill(&rng, b, s->k, -1, 1);
    absv(x, xa, nx), absv(w, wa, nw);
    const double *bias = s->has_b ? b : NULL;
    ref_conv2d_forward(&rs, x, w, bias, s->act, y, z, zabs);
    round_to_float(y, ny);
    tr_rand_fill(&rng, dy, ny, -1, 1);

    int64_t shx[4] = {s->n, s->c, s->h, s->w}, shw[4] = {s->k, cg, s->kh, s->kw};
    int64_t shb[1] = {s->k}, shy[4] = {s->n, s->k, P, Q};
    neat_tensor *X = tr_mk(&c, 4, shx, x), *W = tr_mk(&c, 4, shw, w);
    neat_tensor *B = s->has_b ? tr_mk(&c, 1, shb, b) : NULL, *Y = tr_mk(&c, 4, shy, y);
    neat_tensor *DY = tr_mk(&c, 4, shy, dy);
    if (s->mask & 1) gx.t = tr_mk(&c, 4, shx, NULL);
    if (s->mask & 2) gw.t = tr_mk(&c, 4, shw, NULL);
    if (s->mask & 4) gb.t = tr_mk(&c, 1, shb, NULL);
    grad_prepare(&c, &gx, &rng, s->acc), grad_prepare(&c, &gw, &rng, s->acc);
    grad_prepare(&c, &gb, &rng, s->acc);
    ref_conv2d_backward(&d, s->n, s->c, s->h, s->w, s->k, x, w, bias, y, dy, s->act,
                        gx.t ? gx.ref : NULL, gw.t ? gw.ref : NULL, gb.t ? gb.ref : NULL,
                        s->acc);
    ref_activation_backward(s->act, z, y, dy, dz, ny);
    int64_t kz = cg * s->kh * s->kw; /* reduction length of the forward */
    for (int64_t i = 0; i < ny; i++) {
        dzerr[i] = dz_error(s->act, dy[i], z[i], y[i], 2.0 * (double)kz * EPS32 * zabs[i], dz[i]);
        dzabs[i] = fabs(dz[i]);
    }
    ref_conv2d_backward(&d, s->n, s->c, s->h, s->w, s->k, xa, wa, NULL, NULL, dzabs,
                        NEAT_ACT_NONE, gx.abs, gw.abs, gb.abs, 0);
    ref_conv2d_backward(&d, s->n, s->c, s->h, s->w, s->k, xa, wa, NULL, NULL, dzerr,
                        NEAT_ACT_NONE, gx.err, gw.err, gb.err, 0);

    neat_cmdbuf *cb = NULL;
    if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
        int needs_y = s->act == NEAT_ACT_RELU || s->act == NEAT_ACT_SIGMOID ||
                      s->act == NEAT_ACT_TANH;
        neat_status st = neat_conv2d_backward(cb, &d, s->act, X, W, B, needs_y ? Y : NULL, DY,
                                              gx.t, gw.t, gb.t, s->acc);
        if (CHECK_OK(st, ctx) && tr_run(&c, cb)) {
            grad_check(&c, &gx, s->acc), grad_check(&c, &gw, s->acc);
            grad_check(&c, &gb, s->acc);
        }
    }
    neat_cmdbuf_destroy(cb);
    tr_case_free(&c);
    tr_afree(&a);
}

static void test_conv2d_backward(neat_device *dev, const char *dname) {
    static const conv_case cases[] = {
        /* n  c   h   w   k  kh kw  s  p  d  g  act                 b  mask acc */
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, NEAT_ACT_NONE, 1, 7, 0},
        {2, 3, 7, 5, 4, 3, 3, 1, 1, 1, 1, NEAT_ACT_RELU, 1, 7, 0},
        {2, 4, 9, 9, 6, 3, 3, 2, 1, 1, 2, NEAT_ACT_SIGMOID, 1, 7, 1},
        {1, 2, 11, 10, 3, 3, 3, 1, 2, 2, 1, NEAT_ACT_TANH, 0, 3, 0},
        {3, 6, 8, 7, 6, 2, 3, 2, 0, 1, 3, NEAT_ACT_GELU, 1, 6, 1},
        {2, 1, 28, 28, 8, 3, 3, 1, 1, 1, 1, NEAT_ACT_RELU, 1, 6, 0},  /* LeNet conv1 */
        {2, 8, 14, 14, 16, 3, 3, 1, 1, 1, 1, NEAT_ACT_RELU, 1, 7, 0}, /* LeNet conv2 */
        {1, 5, 17, 17, 7, 5, 5, 2, 2, 1, 1, NEAT_ACT_NONE, 1, 1, 1},
        {2, 4, 13, 13, 4, 3, 3, 1, 1, 1, 4, NEAT_ACT_GELU, 0, 3, 0}, /* depthwise */
        {1, 3, 16, 15, 5, 3, 3, 2, 2, 2, 1, NEAT_ACT_TANH, 1, 4, 1}, /* stride 2 dilation 2 */
        {2, 6, 5, 33, 9, 3, 2, 1, 1, 1, 3, NEAT_ACT_SIGMOID, 1, 2, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        conv_case_run(dev, dname, &cases[i], g_seed + 2000 + i);
}

/* maxpool2d_backward: each dy element lands on its window's first maximum. Cases with
 * small-integer inputs are full of ties, so the first-max rule is what they test. */
typedef struct pool_case { int64_t n, c, h, w, kh, kw, sh, sw, ph, pw; int ties; } pool_case;

static void test_maxpool2d_backward(neat_device *dev, const char *dname) {
    static const pool_case cases[] = {
        {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},   {2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0},
        {2, 3, 9, 7, 2, 2, 2, 2, 0, 0, 1},   {1, 4, 11, 13, 3, 3, 2, 2, 1, 1, 0},
        {2, 2, 10, 9, 3, 3, 1, 1, 1, 1, 1},  {1, 3, 17, 17, 2, 3, 1, 2, 1, 1, 0},
        {4, 32, 28, 28, 2, 2, 2, 2, 0, 0, 0}, {2, 5, 33, 31, 3, 3, 2, 2, 1, 1, 1},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const pool_case *s = &cases[ci];
        uint64_t seed = g_seed + 3000 + ci;
        char ctx[200];
        snprintf(ctx, sizeof ctx, "%s maxpool2d_backward x=%lldx%lldx%lldx%lld k=%lldx%lld stride=%lldx%lld pad=%lldx%lld ties=%d seed=%#llx",
                 dname, (long long)s->n, (long long)s->c, (long long)s->h, (long long)s->w,
                 (long long)s->kh, (long long)s->kw, (long long)s->sh, (long long)s->sw,
                 (long long)s->ph, (long long)s->pw, s->ties, (unsigned long long)seed);
        tcase c = {dev, ctx, {0}, 0, 0};
        arena a = {{0}, 0};
        nt_rng rng = {seed};
        neat_pool2d_desc d = {s->kh, s->kw, s->sh, s->sw, s->ph, s->pw};
        int64_t P = ref_train_pool_out_size(s->h, s->kh, s->sh, s->ph);
        int64_t Q = ref_train_pool_out_size(s->w, s->kw, s->sw, s->pw);
        int64_t nx = s->n * s->c * s->h * s->w, ny = s->n * s->c * P * Q;
        double *x = tr_anew(&a, nx), *dy = tr_anew(&a, ny);
        double *dya = tr_anew(&a, ny), *ref = tr_anew(&a, nx);
        double *got = tr_anew(&a, nx), *tol = tr_anew(&a, nx);
        if (s->ties)
            for (int64_t i = 0; i < nx; i++) x[i] = (double)nt_randint(&rng, 0, 2);
        else
            tr_rand_fill(&rng, x, nx, -1, 1);
        tr_rand_fill(&rng, dy, ny, -1, 1);
        absv(dy, dya, ny);
        ref_maxpool2d_backward(&d, s->n, s->c, s->h, s->w, x, dy, ref);
        /* Overlapping windows add at most ceil(kh/sh) ceil(kw/sw) terms: that many roundings
         * of the sum of |dy|; without overlap the result is exact. */
        ref_maxpool2d_backward(&d, s->n, s->c, s->h, s->w, x, dya, tol);
        double terms = (double)((s->kh + s->sh - 1) / s->sh * ((s->kw + s->sw - 1) / s->sw));
        for (int64_t i = 0; i < nx; i++) tol[i] *= terms > 1 ? 4 * terms * EPS32 : 0;
        int64_t shx[4] = {s->n, s->c, s->h, s->w}, shy[4] = {s->n, s->c, P, Q};
        neat_tensor *X = tr_mk(&c, 4, shx, x);
        neat_tensor *DY = tr_mk(&c, 4, shy, dy), *DX = tr_mk(&c, 4, shx, NULL);
        neat_cmdbuf *cb = NULL;
        if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
            if (tr_recorded(neat_maxpool2d_backward(cb, &d, X, DY, DX), ctx) && tr_run(&c, cb) &&
                tr_download(&c, DX, got, nx))
                tr_compare(&c, "dx", got, ref, tol, nx, terms > 1 ? 4e-5 : 0);
        }
        neat_cmdbuf_destroy(cb);
        tr_case_free(&c);
        tr_afree(&a);
    }
}

/* activation_backward over every activation: relu/sigmoid/tanh get only y, gelu only x. */
static void test_activation_backward(neat_device *dev, const char *dname) {
    static const int64_t sizes[] = {1, 17, 1000, 4097};
    int idx = 0;
    for (int act = 0; act <= NEAT_ACT_GELU; act++)
        for (int si = 0; si < 4; si++, idx++) {
            int64_t n = sizes[si];
            uint64_t seed = g_seed + 4000 + (uint64_t)idx;
            char ctx[160];
            snprintf(ctx, sizeof ctx, "%s activation_backward act=%s n=%lld seed=%#llx", dname,
                     tr_act_name((neat_activation)act), (long long)n, (unsigned long long)seed);
            tcase c = {dev, ctx, {0}, 0, 0};
            arena a = {{0}, 0};
            nt_rng rng = {seed};
            double *x = tr_anew(&a, n), *y = tr_anew(&a, n);
            double *dy = tr_anew(&a, n), *ref = tr_anew(&a, n);
            double *got = tr_anew(&a, n), *tol = tr_anew(&a, n);
            tr_rand_fill(&rng, x, n, -4, 4), tr_rand_fill(&rng, dy, n, -1, 1);
            ref_activation((neat_activation)act, x, y, n);
            round_to_float(y, n);
            ref_activation_backward((neat_activation)act, x, y, dy, ref, n);
            for (int64_t i = 0; i < n; i++)
                tol[i] = 4 * (4 * EPS32 * fabs(ref[i]) +
                              dz_error((neat_activation)act, dy[i], x[i], y[i], 0, ref[i]));
            int64_t sh[1] = {n};
            int from_y = act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
            neat_tensor *X = from_y ? NULL : tr_mk(&c, 1, sh, x);
            neat_tensor *Y = from_y ? tr_mk(&c, 1, sh, y) : NULL;
            neat_tensor *DY = tr_mk(&c, 1, sh, dy), *DX = tr_mk(&c, 1, sh, NULL);
            neat_cmdbuf *cb = NULL;
            if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
                tr_recorded(neat_activation_backward(cb, (neat_activation)act, X, Y, DY, DX), ctx) &&
                tr_run(&c, cb) && tr_download(&c, DX, got, n))
                tr_compare(&c, "dx", got, ref, tol, n, 4e-5);
            neat_cmdbuf_destroy(cb);
            tr_case_free(&c);
            tr_afree(&a);
        }
}

/* softmax_backward: dx = y (dy - sum(dy y)), rtol 4 x 1e-5 plus the rounding of the dot. */
static void test_softmax_backward(neat_device *dev, const char *dname) {
    static const int64_t shapes[][2] = {{1, 1}, {3, 7}, {17, 33}, {64, 1000}, {5, 4097}, {2, 2}};
    for (int si = 0; si < 6; si++) {
        int64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        uint64_t seed = g_seed + 5000 + (uint64_t)si;
        char ctx[160];
        snprintf(ctx, sizeof ctx, "%s softmax_backward %lldx%lld seed=%#llx", dname,
                 (long long)rows, (long long)cols, (unsigned long long)seed);
        tcase c = {dev, ctx, {0}, 0, 0};
        arena a = {{0}, 0};
        nt_rng rng = {seed};
        double *x = tr_anew(&a, n), *y = tr_anew(&a, n);
        double *dy = tr_anew(&a, n), *ref = tr_anew(&a, n);
        double *got = tr_anew(&a, n), *tol = tr_anew(&a, n);
        tr_rand_fill(&rng, x, n, -5, 5), tr_rand_fill(&rng, dy, n, -1, 1);
        ref_softmax(x, y, rows, cols);
        round_to_float(y, n);
        ref_softmax_backward(rows, cols, y, dy, ref);
        for (int64_t r = 0; r < rows; r++) {
            double s = 0;
            for (int64_t j = 0; j < cols; j++) s += fabs(dy[r * cols + j] * y[r * cols + j]);
            for (int64_t j = 0; j < cols; j++) {
                int64_t i = r * cols + j;
                tol[i] = 4 * (1e-5 * fabs(ref[i]) + y[i] * (double)cols * EPS32 * s +
                              2 * EPS32 * y[i] * fabs(dy[i])) + 1e-37;
            }
        }
        int64_t sh[2] = {rows, cols};
        neat_tensor *Y = tr_mk(&c, 2, sh, y);
        neat_tensor *DY = tr_mk(&c, 2, sh, dy), *DX = tr_mk(&c, 2, sh, NULL);
        neat_cmdbuf *cb = NULL;
        if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
            tr_recorded(neat_softmax_backward(cb, Y, DY, DX), ctx) && tr_run(&c, cb) &&
            tr_download(&c, DX, got, n))
            tr_compare(&c, "dx", got, ref, tol, n, 4e-5);
        neat_cmdbuf_destroy(cb);
        tr_case_free(&c);
        tr_afree(&a);
    }
}

/* ======== 2. softmax cross-entropy ============================================================ */

/* big != 0: logits of +-1000 (each row one +1000, some -1000), labels on either. */
static void xent_case(neat_device *dev, const char *dname, int64_t rows, int64_t cols, int big,
                      uint64_t seed) {
    char ctx[160];
    snprintf(ctx, sizeof ctx, "%s softmax_cross_entropy %lldx%lld%s seed=%#llx", dname,
             (long long)rows, (long long)cols, big ? " logits +-1000" : "",
             (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    int64_t n = rows * cols;
    double *x = tr_anew(&a, n), *lab = tr_anew(&a, rows);
    double *ref = tr_anew(&a, n), *got = tr_anew(&a, n);
    double *tol = tr_anew(&a, n), loss_got = NAN;
    tr_rand_fill(&rng, x, n, -8, 8);
    for (int64_t r = 0; r < rows; r++) {
        lab[r] = (double)nt_randint(&rng, 0, cols - 1);
        if (big) {
            for (int64_t j = 0; j < cols; j++)
                if (nt_randint(&rng, 0, 1)) x[r * cols + j] = -1000;
            x[r * cols + nt_randint(&rng, 0, cols - 1)] = 1000;
        }
    }
    double loss_ref = ref_softmax_xent(rows, cols, x, lab);
    ref_softmax_xent_backward(rows, cols, x, lab, ref);
    /* loss: per row, logsumexp rounds about (cols + 4) eps, then two roundings of size
     * |lse| + |x_label|; the mean adds rows roundings. dlogits: softmax rtol 1e-5. */
    double loss_tol = 0;
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, xl = fabs(x[r * cols + (int64_t)lab[r]]);
        for (int64_t j = 0; j < cols; j++) m = fmax(m, x[r * cols + j]);
        double mag = fabs(m) + xl + log((double)cols) + 1; /* bounds |lse| + |x_label| */
        loss_tol += (double)(cols + 4) * EPS32 + (2 + (double)rows) * EPS32 * mag;
        for (int64_t j = 0; j < cols; j++) {
            int64_t i = r * cols + j;
            double p = ref[i] * (double)rows + (j == (int64_t)lab[r]);
            tol[i] = 4 * (1e-5 * p / (double)rows + 2 * EPS32 * fabs(ref[i])) + 1e-37;
        }
    }
    loss_tol = rows ? 4 * loss_tol / (double)rows : 0;
    int64_t shx[2] = {rows, cols}, shl[1] = {rows}, sh1[1] = {1};
    neat_tensor *X = tr_mk(&c, 2, shx, x);
    neat_tensor *L = tr_mk(&c, 1, shl, lab), *LOSS = tr_mk(&c, 1, sh1, NULL);
    neat_tensor *DX = tr_mk(&c, 2, shx, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
        tr_recorded(neat_softmax_cross_entropy(cb, X, L, LOSS), ctx) &&
        tr_recorded(neat_softmax_cross_entropy_backward(cb, X, L, DX), ctx) && tr_run(&c, cb) &&
        tr_download(&c, LOSS, &loss_got, 1) && tr_download(&c, DX, got, n)) {
        CHECK(fabs(loss_got - loss_ref) <= loss_tol, "%s: loss %.9g, reference %.9g, tolerance %.3g",
              ctx, loss_got, loss_ref, loss_tol);
        tr_compare(&c, "dlogits", got, ref, tol, n, 4e-5);
    }
    neat_cmdbuf_destroy(cb);
    tr_case_free(&c);
    tr_afree(&a);
}

static void test_softmax_xent(neat_device *dev, const char *dname) {
    static const int64_t shapes[][3] = {{1, 1, 0},  {2, 10, 0},   {17, 3, 0},  {128, 10, 0},
                                        {7, 1001, 0}, {0, 10, 0}, {16, 10, 1}, {5, 257, 1}};
    for (int i = 0; i < 8; i++)
        xent_case(dev, dname, shapes[i][0], shapes[i][1], (int)shapes[i][2],
                  g_seed + 6000 + (uint64_t)i);

    /* A label out of range is reported by wait as INVALID_ARGUMENT. */
    tcase c = {dev, "softmax_cross_entropy bad label", {0}, 0, 0};
    double x[6] = {1, 2, 3, 4, 5, 6}, lab[2] = {0, 3};
    int64_t shx[2] = {2, 3}, shl[1] = {2}, sh1[1] = {1};
    neat_tensor *X = tr_mk(&c, 2, shx, x);
    neat_tensor *L = tr_mk(&c, 1, shl, lab), *LOSS = tr_mk(&c, 1, sh1, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && tr_setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", c.ctx) &&
        tr_recorded(neat_softmax_cross_entropy(cb, X, L, LOSS), c.ctx)) {
        neat_status st = neat_cmdbuf_commit(cb);
        if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
        CHECK_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "softmax_cross_entropy label 3 of 3 classes");
    }
    neat_cmdbuf_destroy(cb);
    tr_case_free(&c);
}

int main(void) {
    g_seed = nt_seed_base("backward", g_seed);

    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++) {
        test_linear_backward(devs[d], names[d]);
        test_conv2d_backward(devs[d], names[d]);
        test_maxpool2d_backward(devs[d], names[d]);
        test_activation_backward(devs[d], names[d]);
        test_softmax_backward(devs[d], names[d]);
        test_softmax_xent(devs[d], names[d]);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("backward");
}
