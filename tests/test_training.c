/*
 * test_training.c — the training ops of every device against the float64 references.
 *
 *  1. The references themselves: reference_train.c's backward functions against central
 *     differences of reference.c's forward functions (double, small random shapes), and
 *     the optimizer references against closed forms.
 *  2. Each backward op of the library against the reference, at 4x the forward tolerance:
 *     per element |got - ref| <= 4 (2 K 2^-24 sum|A||B| + propagated input error), and a
 *     relative Frobenius error <= 4e-5. Outputs are poisoned with NaN before each run.
 *  3. SGD (plain, momentum, Nesterov, weight decay) and AdamW replayed from one recorded
 *     update for 1000 steps with a learning-rate schedule written into `hyper`, checked at
 *     steps 1, 2 and 1000 against float64 with a running bound of float32 rounding.
 *  4. Softmax cross-entropy forward/backward, with logits of +-1000 and a bad label.
 *  5. matmul_batched against the reference at the forward tolerance.
 * Seeds: NEATML_TEST_SEED overrides the base; each case prints its seed when it fails.
 */
#include "harness.h"
#include "reference.h"
#include "reference_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EPS32 0x1.0p-24
#define MAX_T 16

static uint64_t g_seed = 0x5eed7a1full;

/* ---- host helpers ------------------------------------------------------------------------- */

static double *dnew(int64_t n) { return calloc((size_t)n + 1, sizeof(double)); }

/* Random values that are exactly representable in float32, so host and device agree. */
static void rand_fill(nt_rng *r, double *v, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)nt_uniform(r, lo, hi);
}

static void round_to_float(double *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)v[i];
}

static void absv(const double *v, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fabs(v[i]);
}

static int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* Record a setup failure (only failures count: setup is not an assertion). */
static int setup_ok(neat_status st, const char *what, const char *ctx) {
    if (st == NEAT_OK) return 1;
    CHECK(0, "%s: %s: %s (%s)", ctx, what, neat_status_string(st), neat_last_error());
    return 0;
}

/* Tensors of one case, destroyed together. */
typedef struct tcase {
    neat_device *dev;
    const char *ctx;
    neat_tensor *t[MAX_T];
    int nt;
    int failed;
} tcase;

static int upload(tcase *c, neat_tensor *t, const double *v, int64_t n) {
    if (n == 0) return 1;
    float *f = malloc(sizeof(float) * (size_t)n);
    if (!f) return c->failed = 1, setup_ok(NEAT_ERR_OUT_OF_MEMORY, "malloc", c->ctx);
    for (int64_t i = 0; i < n; i++) f[i] = v ? (float)v[i] : NAN;
    int ok = setup_ok(neat_tensor_write(t, f, n), "neat_tensor_write", c->ctx);
    free(f);
    if (!ok) c->failed = 1;
    return ok;
}

/* A tensor holding v, or NaN everywhere when v is NULL (a poisoned output). */
static neat_tensor *mk(tcase *c, int ndim, const int64_t *shape, const double *v) {
    neat_tensor *t = NULL;
    if (c->failed || c->nt == MAX_T) return c->failed = 1, NULL;
    if (!setup_ok(neat_tensor_create(c->dev, ndim, shape, &t), "neat_tensor_create", c->ctx))
        return c->failed = 1, NULL;
    c->t[c->nt++] = t;
    upload(c, t, v, numel(ndim, shape));
    return t;
}

/* Read n values into out through a guarded buffer; counts one assertion (the guards). */
static int download(tcase *c, const neat_tensor *t, double *out, int64_t n) {
    float *f = nt_alloc(n);
    if (!f) return setup_ok(NEAT_ERR_OUT_OF_MEMORY, "nt_alloc", c->ctx);
    nt_poison(f, n);
    int ok = setup_ok(neat_tensor_read(t, f, n), "neat_tensor_read", c->ctx);
    ok = ok && CHECK(nt_guard_ok(f, n), "%s: neat_tensor_read wrote outside %lld floats",
                     c->ctx, (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = f[i];
    nt_free(f);
    return ok;
}

static void tcase_free(tcase *c) {
    for (int i = 0; i < c->nt; i++) neat_tensor_destroy(c->t[i]);
    c->nt = 0;
}

/* One assertion that recording succeeded. A function, not CHECK_OK: that macro evaluates
 * its status argument twice, which would record the op twice. */
static int recorded(neat_status st, const char *ctx) { return CHECK_OK(st, ctx); }

/* Commit and wait. Only a failure counts: the comparisons that follow are the assertions
 * (the optimizer tests commit 1000 times per case). */
static int run(tcase *c, neat_cmdbuf *cb) {
    neat_status st = neat_cmdbuf_commit(cb);
    if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
    return setup_ok(st, "commit/wait", c->ctx);
}

/* One assertion per array: every element within tol[i] (NaN fails) and the relative
 * Frobenius error within frob. */
static int compare(const tcase *c, const char *what, const double *got, const double *ref,
                   const double *tol, int64_t n, double frob) {
    double d2 = 0, r2 = 0;
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - ref[i]);
        if (!(d <= tol[i]) && bad < 0) bad = i;
        d2 += d * d;
        r2 += ref[i] * ref[i];
    }
    if (bad >= 0)
        return CHECK(0, "%s: %s[%lld] = %.9g, reference %.9g, tolerance %.3g", c->ctx, what,
                     (long long)bad, got[bad], ref[bad], tol[bad]);
    return CHECK(d2 <= frob * frob * r2 || d2 == 0, "%s: %s relative Frobenius error %.3g > %.3g",
                 c->ctx, what, sqrt(d2 / r2), frob);
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

static const char *act_name(neat_activation a) {
    static const char *names[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    return names[a];
}

/* ======== 1. the references against finite differences ================================== */

/* The loss L = sum(f(params) * r): its gradient is the backward with dy = r. fd_grad
 * perturbs each element of v by +-h and compares (L+ - L-) / 2h with grad. */
typedef double (*loss_fn)(void *state);

static int fd_check(const char *what, const char *grad_name, loss_fn loss, void *state, double *v,
                    const double *grad, int64_t n) {
    const double h = 1e-6;
    for (int64_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h;
        double lp = loss(state);
        v[i] = keep - h;
        double lm = loss(state);
        v[i] = keep;
        double fd = (lp - lm) / (2 * h);
        if (!(fabs(fd - grad[i]) <= 1e-6 * (1 + fabs(grad[i]))))
            return CHECK(0, "finite differences %s %s[%lld]: numeric %.10g, reference %.10g",
                         what, grad_name, (long long)i, fd, grad[i]);
    }
    return CHECK(1, "finite differences %s %s", what, grad_name);
}

typedef struct lin_state {
    double *x, *w, *b, *r, *y;
    int64_t n, in, out;
    neat_activation act;
} lin_state;

static double lin_loss(void *p) {
    lin_state *s = p;
    ref_linear_forward(s->x, s->w, s->b, s->act, s->y, NULL, NULL, s->n, s->in, s->out);
    double l = 0;
    for (int64_t i = 0; i < s->n * s->out; i++) l += s->y[i] * s->r[i];
    return l;
}

typedef struct conv_state {
    ref_conv_shape shape;
    neat_conv2d_desc d;
    double *x, *w, *b, *r, *y;
    int64_t ny;
    neat_activation act;
} conv_state;

static double conv_loss(void *p) {
    conv_state *s = p;
    ref_conv2d_forward(&s->shape, s->x, s->w, s->b, s->act, s->y, NULL, NULL);
    double l = 0;
    for (int64_t i = 0; i < s->ny; i++) l += s->y[i] * s->r[i];
    return l;
}

typedef struct row_state { /* softmax, cross-entropy, pooling, activation */
    double *x, *r, *y, *labels;
    int64_t rows, cols;
    ref_conv_shape pool;
    neat_activation act;
} row_state;

static double softmax_loss(void *p) {
    row_state *s = p;
    ref_softmax(s->x, s->y, s->rows, s->cols);
    double l = 0;
    for (int64_t i = 0; i < s->rows * s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static double xent_loss(void *p) {
    row_state *s = p;
    return ref_softmax_xent(s->rows, s->cols, s->x, s->labels);
}

static double pool_loss(void *p) {
    row_state *s = p;
    ref_maxpool2d(&s->pool, s->x, s->y);
    double l = 0;
    for (int64_t i = 0; i < s->rows * s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static double act_loss(void *p) {
    row_state *s = p;
    ref_activation(s->act, s->x, s->y, s->cols);
    double l = 0;
    for (int64_t i = 0; i < s->cols; i++) l += s->y[i] * s->r[i];
    return l;
}

static void check_references(void) {
    nt_rng rng = {g_seed ^ 0xfd};
    double *buf[12];
    for (int i = 0; i < 12; i++) buf[i] = dnew(4096);
    double *x = buf[0], *w = buf[1], *b = buf[2], *r = buf[3], *y = buf[4], *dx = buf[5],
           *dw = buf[6], *db = buf[7], *prev = buf[8], *lab = buf[9];
    char what[96];

    for (int a = 0; a <= NEAT_ACT_GELU; a++) { /* linear: n 3, in 4, out 5 */
        lin_state s = {x, w, b, r, y, 3, 4, 5, (neat_activation)a};
        rand_fill(&rng, x, 12, -1, 1), rand_fill(&rng, w, 20, -1, 1);
        rand_fill(&rng, b, 5, -1, 1), rand_fill(&rng, r, 15, -1, 1);
        ref_linear_forward(x, w, b, s.act, y, NULL, NULL, 3, 4, 5);
        ref_linear_backward(x, w, b, y, r, s.act, 3, 4, 5, dx, dw, db, 0);
        snprintf(what, sizeof what, "linear %s", act_name(s.act));
        fd_check(what, "dx", lin_loss, &s, x, dx, 12);
        fd_check(what, "dw", lin_loss, &s, w, dw, 20);
        fd_check(what, "db", lin_loss, &s, b, db, 5);
        /* accumulate adds the same gradient to what is there (y again: fd_check's last
         * forward ran on a perturbed x) */
        ref_linear_forward(x, w, b, s.act, y, NULL, NULL, 3, 4, 5);
        for (int i = 0; i < 20; i++) prev[i] = dw[i] + 1.5;
        ref_linear_backward(x, w, b, y, r, s.act, 3, 4, 5, NULL, prev, NULL, 1);
        int ok = 1;
        for (int i = 0; i < 20; i++) ok &= fabs(prev[i] - (2 * dw[i] + 1.5)) < 1e-12;
        CHECK(ok, "reference linear %s: accumulate adds", act_name(s.act));
    }

    /* conv: stride 2 / pad 1 / dilation 2 / groups 2 over every activation */
    static const struct { int64_t n, c, h, w, k, kh, kw, s, p, dil, g; } cv[] = {
        {2, 2, 5, 6, 3, 3, 3, 1, 1, 1, 1}, {1, 4, 7, 7, 4, 3, 2, 2, 1, 1, 2},
        {2, 3, 8, 7, 2, 3, 3, 1, 2, 2, 1}, {1, 4, 9, 8, 6, 3, 3, 2, 2, 2, 2},
        {1, 3, 6, 5, 3, 2, 2, 1, 0, 1, 3}};
    for (size_t i = 0; i < sizeof cv / sizeof cv[0]; i++) {
        conv_state s = {{cv[i].n, cv[i].c, cv[i].h, cv[i].w, cv[i].k, cv[i].kh, cv[i].kw,
                         cv[i].s, cv[i].s, cv[i].p, cv[i].p, cv[i].dil, cv[i].dil, cv[i].g},
                        {cv[i].kh, cv[i].kw, cv[i].s, cv[i].s, cv[i].p, cv[i].p, cv[i].dil,
                         cv[i].dil, cv[i].g},
                        x, w, b, r, y, 0, (neat_activation)(i % 5)};
        int64_t P = ref_train_conv_out_size(cv[i].h, cv[i].kh, cv[i].s, cv[i].p, cv[i].dil);
        int64_t Q = ref_train_conv_out_size(cv[i].w, cv[i].kw, cv[i].s, cv[i].p, cv[i].dil);
        int64_t nx = cv[i].n * cv[i].c * cv[i].h * cv[i].w;
        int64_t nw = cv[i].k * (cv[i].c / cv[i].g) * cv[i].kh * cv[i].kw;
        s.ny = cv[i].n * cv[i].k * P * Q;
        rand_fill(&rng, x, nx, -1, 1), rand_fill(&rng, w, nw, -1, 1);
        rand_fill(&rng, b, cv[i].k, -1, 1), rand_fill(&rng, r, s.ny, -1, 1);
        ref_conv2d_forward(&s.shape, x, w, b, s.act, y, NULL, NULL);
        ref_conv2d_backward(&s.d, cv[i].n, cv[i].c, cv[i].h, cv[i].w, cv[i].k, x, w, b, y, r,
                            s.act, dx, dw, db, 0);
        snprintf(what, sizeof what, "conv case %zu (%s)", i, act_name(s.act));
        fd_check(what, "dx", conv_loss, &s, x, dx, nx);
        fd_check(what, "dw", conv_loss, &s, w, dw, nw);
        fd_check(what, "db", conv_loss, &s, b, db, cv[i].k);
    }

    /* maxpool: 3x3 stride 2 pad 1 (overlapping windows) and 2x2 stride 2 */
    for (int i = 0; i < 2; i++) {
        row_state s = {x, r, y, NULL, 0, 0, {2, 3, 7, 6, 3, 3 - i, 3 - i, 2, 2, 1 - i, 1 - i,
                                              1, 1, 1}, NEAT_ACT_NONE};
        neat_pool2d_desc d = {s.pool.kh, s.pool.kw, 2, 2, s.pool.ph, s.pool.pw};
        s.rows = 6; /* n c */
        s.cols = ref_train_pool_out_size(7, d.kernel_h, 2, d.pad_h) *
                 ref_train_pool_out_size(6, d.kernel_w, 2, d.pad_w);
        rand_fill(&rng, x, 6 * 42, -1, 1), rand_fill(&rng, r, s.rows * s.cols, -1, 1);
        ref_maxpool2d_backward(&d, 2, 3, 7, 6, x, r, dx);
        snprintf(what, sizeof what, "maxpool %lldx%lld", (long long)d.kernel_h,
                 (long long)d.kernel_w);
        fd_check(what, "dx", pool_loss, &s, x, dx, 6 * 42);
    }

    for (int a = 0; a <= NEAT_ACT_GELU; a++) { /* activations */
        row_state s = {x, r, y, NULL, 1, 40, {0}, (neat_activation)a};
        rand_fill(&rng, x, 40, -3, 3), rand_fill(&rng, r, 40, -1, 1);
        ref_activation(s.act, x, y, 40);
        ref_activation_backward(s.act, x, y, r, dx, 40);
        snprintf(what, sizeof what, "activation %s", act_name(s.act));
        fd_check(what, "dx", act_loss, &s, x, dx, 40);
    }

    row_state sm = {x, r, y, lab, 3, 7, {0}, NEAT_ACT_NONE};
    rand_fill(&rng, x, 21, -3, 3), rand_fill(&rng, r, 21, -1, 1);
    ref_softmax(x, y, 3, 7);
    ref_softmax_backward(3, 7, y, r, dx);
    fd_check("softmax", "dx", softmax_loss, &sm, x, dx, 21);
    for (int i = 0; i < 3; i++) lab[i] = (double)nt_randint(&rng, 0, 6);
    ref_softmax_xent_backward(3, 7, x, lab, dx);
    fd_check("softmax cross-entropy", "dlogits", xent_loss, &sm, x, dx, 21);

    /* Optimizers against closed forms for a constant gradient g = 0.5 from param 1:
     * plain SGD: p_t = 1 - t lr g; momentum m: v_t = g (1 - m^t) / (1 - m);
     * Adam: m_t / (1-b1^t) = g and v_t / (1-b2^t) = g^2, so each step is lr g/(|g|+eps). */
    double p1 = 1, p2 = 1, v2 = 0, p3 = 1, m3 = 0, v3 = 0, g = 0.5, lr = 0.1;
    neat_sgd_params plain = {0, 0, 0}, mom = {0.5f, 0, 0};
    neat_adam_params adam = {0.9f, 0.999f, 1e-8f, 0};
    for (int t = 1; t <= 5; t++) {
        ref_sgd_update(&plain, lr, &p1, &g, NULL, 1);
        ref_sgd_update(&mom, lr, &p2, &g, &v2, 1);
        ref_adam_update(&adam, lr, t, &p3, &g, &m3, &v3, 1);
    }
    CHECK(fabs(p1 - (1 - 5 * lr * g)) < 1e-12, "reference sgd: %g", p1);
    CHECK(fabs(v2 - g * (1 - pow(0.5, 5)) / 0.5) < 1e-12, "reference sgd momentum: %g", v2);
    CHECK(fabs(p3 - (1 - 5 * lr * g / (g + 1e-8))) < 1e-9, "reference adam: %.12g", p3);

    for (int i = 0; i < 12; i++) free(buf[i]);
}

/* ======== 2. backward ops of the library against the references ========================= */

/* Host arrays of one case, freed together. */
typedef struct arena { double *p[40]; int n; } arena;

static double *anew(arena *a, int64_t n) {
    if (a->n == 40) return NULL;
    return a->p[a->n++] = dnew(n);
}

static void afree(arena *a) {
    for (int i = 0; i < a->n; i++) free(a->p[i]);
    a->n = 0;
}

/* One gradient output: host arrays and its device tensor (NULL when not requested). */
typedef struct grad_out {
    const char *name;
    int64_t size, k; /* elements; length of the reduction that produces each one */
    double *prev, *ref, *got, *tol, *abs, *err;
    neat_tensor *t;
} grad_out;

static void grad_init(grad_out *g, arena *a, const char *name, int64_t size, int64_t k) {
    g->name = name, g->size = size, g->k = k, g->t = NULL;
    g->prev = anew(a, size), g->ref = anew(a, size), g->got = anew(a, size);
    g->tol = anew(a, size), g->abs = anew(a, size), g->err = anew(a, size);
}

/* Before a run: previous contents (random when accumulating, else NaN) into the tensor and
 * into ref, which the reference then overwrites or adds to. */
static void grad_prepare(tcase *c, grad_out *g, nt_rng *rng, int accumulate) {
    if (!g->t) return;
    if (accumulate) rand_fill(rng, g->prev, g->size, -1, 1);
    memcpy(g->ref, g->prev, sizeof(double) * (size_t)g->size);
    upload(c, g->t, accumulate ? g->prev : NULL, g->size);
}

static void grad_check(tcase *c, grad_out *g, int accumulate) {
    if (!g->t) return;
    grad_tol(g->tol, g->abs, g->err, g->prev, g->ref, g->size, g->k, accumulate);
    if (download(c, g->t, g->got, g->size))
        compare(c, g->name, g->got, g->ref, g->tol, g->size, 4e-5);
}

typedef struct lin_case { int64_t n, in, out; } lin_case;

/* mask: bit 0 dx, bit 1 dw, bit 2 db. Runs twice from one recording (a replay with new dy
 * and new previous contents). */
static void linear_case(neat_device *dev, const char *dname, lin_case s, neat_activation act,
                        int has_b, int mask, int acc, uint64_t seed) {
    char ctx[200];
    snprintf(ctx, sizeof ctx, "%s linear_backward n=%lld in=%lld out=%lld act=%s bias=%d grads=%s%s%s acc=%d seed=%#llx",
             dname, (long long)s.n, (long long)s.in, (long long)s.out, act_name(act), has_b,
             mask & 1 ? "x" : "", mask & 2 ? "w" : "", mask & 4 ? "b" : "", acc,
             (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    int64_t nx = s.n * s.in, nw = s.out * s.in, ny = s.n * s.out;
    double *x = anew(&a, nx), *w = anew(&a, nw), *b = anew(&a, s.out), *y = anew(&a, ny);
    double *z = anew(&a, ny), *zabs = anew(&a, ny), *dy = anew(&a, ny), *dz = anew(&a, ny);
    double *dzabs = anew(&a, ny), *dzerr = anew(&a, ny), *xa = anew(&a, nx), *wa = anew(&a, nw);
    grad_out gx, gw, gb;
    grad_init(&gx, &a, "dx", nx, s.out);
    grad_init(&gw, &a, "dw", nw, s.n);
    grad_init(&gb, &a, "db", s.out, s.n);
    rand_fill(&rng, x, nx, -1, 1), rand_fill(&rng, w, nw, -1, 1), rand_fill(&rng, b, s.out, -1, 1);
    absv(x, xa, nx), absv(w, wa, nw);
    /* The saved output is what a float forward would store: the reference rounded. */
    ref_linear_forward(x, w, has_b ? b : NULL, act, y, z, zabs, s.n, s.in, s.out);
    round_to_float(y, ny);

    int64_t shx[2] = {s.n, s.in}, shw[2] = {s.out, s.in}, shb[1] = {s.out}, shy[2] = {s.n, s.out};
    neat_tensor *X = mk(&c, 2, shx, x), *W = mk(&c, 2, shw, w);
    neat_tensor *B = has_b ? mk(&c, 1, shb, b) : NULL, *Y = mk(&c, 2, shy, y);
    neat_tensor *DY = mk(&c, 2, shy, NULL);
    if (mask & 1) gx.t = mk(&c, 2, shx, NULL);
    if (mask & 2) gw.t = mk(&c, 2, shw, NULL);
    if (mask & 4) gb.t = mk(&c, 1, shb, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
        /* relu/sigmoid/tanh read y; none and gelu must work without it */
        int needs_y = act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
        neat_status st = neat_linear_backward(cb, X, W, B, needs_y ? Y : NULL, DY, act, gx.t,
                                              gw.t, gb.t, acc);
        if (CHECK_OK(st, ctx))
            for (int rep = 0; rep < 2 && !c.failed; rep++) {
                rand_fill(&rng, dy, ny, -1, 1);
                upload(&c, DY, dy, ny);
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
                if (c.failed || !run(&c, cb)) break;
                grad_check(&c, &gx, acc), grad_check(&c, &gw, acc), grad_check(&c, &gb, acc);
            }
    }
    neat_cmdbuf_destroy(cb);
    tcase_free(&c);
    afree(&a);
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
             (long long)s->pad, (long long)s->dil, (long long)s->groups, act_name(s->act),
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
    double *x = anew(&a, nx), *w = anew(&a, nw), *b = anew(&a, s->k), *y = anew(&a, ny);
    double *z = anew(&a, ny), *zabs = anew(&a, ny), *dy = anew(&a, ny), *dz = anew(&a, ny);
    double *dzabs = anew(&a, ny), *dzerr = anew(&a, ny), *xa = anew(&a, nx), *wa = anew(&a, nw);
    grad_out gx, gw, gb;
    grad_init(&gx, &a, "dx", nx, (s->k / s->groups) * s->kh * s->kw);
    grad_init(&gw, &a, "dw", nw, s->n * P * Q);
    grad_init(&gb, &a, "db", s->k, s->n * P * Q);
    rand_fill(&rng, x, nx, -1, 1), rand_fill(&rng, w, nw, -1, 1), rand_fill(&rng, b, s->k, -1, 1);
    absv(x, xa, nx), absv(w, wa, nw);
    const double *bias = s->has_b ? b : NULL;
    ref_conv2d_forward(&rs, x, w, bias, s->act, y, z, zabs);
    round_to_float(y, ny);
    rand_fill(&rng, dy, ny, -1, 1);

    int64_t shx[4] = {s->n, s->c, s->h, s->w}, shw[4] = {s->k, cg, s->kh, s->kw};
    int64_t shb[1] = {s->k}, shy[4] = {s->n, s->k, P, Q};
    neat_tensor *X = mk(&c, 4, shx, x), *W = mk(&c, 4, shw, w);
    neat_tensor *B = s->has_b ? mk(&c, 1, shb, b) : NULL, *Y = mk(&c, 4, shy, y);
    neat_tensor *DY = mk(&c, 4, shy, dy);
    if (s->mask & 1) gx.t = mk(&c, 4, shx, NULL);
    if (s->mask & 2) gw.t = mk(&c, 4, shw, NULL);
    if (s->mask & 4) gb.t = mk(&c, 1, shb, NULL);
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
    if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
        int needs_y = s->act == NEAT_ACT_RELU || s->act == NEAT_ACT_SIGMOID ||
                      s->act == NEAT_ACT_TANH;
        neat_status st = neat_conv2d_backward(cb, &d, X, W, B, needs_y ? Y : NULL, DY, s->act,
                                              gx.t, gw.t, gb.t, s->acc);
        if (CHECK_OK(st, ctx) && run(&c, cb)) {
            grad_check(&c, &gx, s->acc), grad_check(&c, &gw, s->acc);
            grad_check(&c, &gb, s->acc);
        }
    }
    neat_cmdbuf_destroy(cb);
    tcase_free(&c);
    afree(&a);
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
        double *x = anew(&a, nx), *dy = anew(&a, ny), *dya = anew(&a, ny), *ref = anew(&a, nx);
        double *got = anew(&a, nx), *tol = anew(&a, nx);
        if (s->ties)
            for (int64_t i = 0; i < nx; i++) x[i] = (double)nt_randint(&rng, 0, 2);
        else
            rand_fill(&rng, x, nx, -1, 1);
        rand_fill(&rng, dy, ny, -1, 1);
        absv(dy, dya, ny);
        ref_maxpool2d_backward(&d, s->n, s->c, s->h, s->w, x, dy, ref);
        /* Overlapping windows add at most ceil(kh/sh) ceil(kw/sw) terms: that many roundings
         * of the sum of |dy|; without overlap the result is exact. */
        ref_maxpool2d_backward(&d, s->n, s->c, s->h, s->w, x, dya, tol);
        double terms = (double)((s->kh + s->sh - 1) / s->sh * ((s->kw + s->sw - 1) / s->sw));
        for (int64_t i = 0; i < nx; i++) tol[i] *= terms > 1 ? 4 * terms * EPS32 : 0;
        int64_t shx[4] = {s->n, s->c, s->h, s->w}, shy[4] = {s->n, s->c, P, Q};
        neat_tensor *X = mk(&c, 4, shx, x), *DY = mk(&c, 4, shy, dy), *DX = mk(&c, 4, shx, NULL);
        neat_cmdbuf *cb = NULL;
        if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) {
            if (recorded(neat_maxpool2d_backward(cb, &d, X, DY, DX), ctx) && run(&c, cb) &&
                download(&c, DX, got, nx))
                compare(&c, "dx", got, ref, tol, nx, terms > 1 ? 4e-5 : 0);
        }
        neat_cmdbuf_destroy(cb);
        tcase_free(&c);
        afree(&a);
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
                     act_name((neat_activation)act), (long long)n, (unsigned long long)seed);
            tcase c = {dev, ctx, {0}, 0, 0};
            arena a = {{0}, 0};
            nt_rng rng = {seed};
            double *x = anew(&a, n), *y = anew(&a, n), *dy = anew(&a, n), *ref = anew(&a, n);
            double *got = anew(&a, n), *tol = anew(&a, n);
            rand_fill(&rng, x, n, -4, 4), rand_fill(&rng, dy, n, -1, 1);
            ref_activation((neat_activation)act, x, y, n);
            round_to_float(y, n);
            ref_activation_backward((neat_activation)act, x, y, dy, ref, n);
            for (int64_t i = 0; i < n; i++)
                tol[i] = 4 * (4 * EPS32 * fabs(ref[i]) +
                              dz_error((neat_activation)act, dy[i], x[i], y[i], 0, ref[i]));
            int64_t sh[1] = {n};
            int from_y = act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
            neat_tensor *X = from_y ? NULL : mk(&c, 1, sh, x), *Y = from_y ? mk(&c, 1, sh, y) : NULL;
            neat_tensor *DY = mk(&c, 1, sh, dy), *DX = mk(&c, 1, sh, NULL);
            neat_cmdbuf *cb = NULL;
            if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
                recorded(neat_activation_backward(cb, (neat_activation)act, X, Y, DY, DX), ctx) &&
                run(&c, cb) && download(&c, DX, got, n))
                compare(&c, "dx", got, ref, tol, n, 4e-5);
            neat_cmdbuf_destroy(cb);
            tcase_free(&c);
            afree(&a);
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
        double *x = anew(&a, n), *y = anew(&a, n), *dy = anew(&a, n), *ref = anew(&a, n);
        double *got = anew(&a, n), *tol = anew(&a, n);
        rand_fill(&rng, x, n, -5, 5), rand_fill(&rng, dy, n, -1, 1);
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
        neat_tensor *Y = mk(&c, 2, sh, y), *DY = mk(&c, 2, sh, dy), *DX = mk(&c, 2, sh, NULL);
        neat_cmdbuf *cb = NULL;
        if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
            recorded(neat_softmax_backward(cb, Y, DY, DX), ctx) && run(&c, cb) &&
            download(&c, DX, got, n))
            compare(&c, "dx", got, ref, tol, n, 4e-5);
        neat_cmdbuf_destroy(cb);
        tcase_free(&c);
        afree(&a);
    }
}

/* ======== 4. softmax cross-entropy ============================================================ */

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
    double *x = anew(&a, n), *lab = anew(&a, rows), *ref = anew(&a, n), *got = anew(&a, n);
    double *tol = anew(&a, n), loss_got = NAN;
    rand_fill(&rng, x, n, -8, 8);
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
    neat_tensor *X = mk(&c, 2, shx, x), *L = mk(&c, 1, shl, lab), *LOSS = mk(&c, 1, sh1, NULL);
    neat_tensor *DX = mk(&c, 2, shx, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
        recorded(neat_softmax_cross_entropy(cb, X, L, LOSS), ctx) &&
        recorded(neat_softmax_cross_entropy_backward(cb, X, L, DX), ctx) && run(&c, cb) &&
        download(&c, LOSS, &loss_got, 1) && download(&c, DX, got, n)) {
        CHECK(fabs(loss_got - loss_ref) <= loss_tol, "%s: loss %.9g, reference %.9g, tolerance %.3g",
              ctx, loss_got, loss_ref, loss_tol);
        compare(&c, "dlogits", got, ref, tol, n, 4e-5);
    }
    neat_cmdbuf_destroy(cb);
    tcase_free(&c);
    afree(&a);
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
    neat_tensor *X = mk(&c, 2, shx, x), *L = mk(&c, 1, shl, lab), *LOSS = mk(&c, 1, sh1, NULL);
    neat_cmdbuf *cb = NULL;
    if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", c.ctx) &&
        recorded(neat_softmax_cross_entropy(cb, X, L, LOSS), c.ctx)) {
        neat_status st = neat_cmdbuf_commit(cb);
        if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
        CHECK_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "softmax_cross_entropy label 3 of 3 classes");
    }
    neat_cmdbuf_destroy(cb);
    tcase_free(&c);
}

/* ======== 3. optimizers ================================================================== */

/* Replays one recorded update for 1000 steps, writing a new gradient and hyper = {lr_t, t}
 * before each commit, and compares at steps 1, 2 and 1000 with the float64 formula. The
 * tolerance is 4x a bound of float32 rounding carried along with the reference: each
 * state's error e grows by the propagated error of its inputs plus a few roundings of the
 * magnitudes involved (e_p' = e_p + lr e_u + 2 eps (|p| + lr |u|), and so on). */
typedef struct optim_case {
    const char *name;
    int adam;
    neat_sgd_params sgd;
    neat_adam_params ad;
    float lr0;
} optim_case;

/* The learning-rate schedule: cosine between lr0 and lr0/2 (float, as hyper holds it). */
static float schedule(float lr0, int t) { return lr0 * (float)(0.75 + 0.25 * cos(t / 50.0)); }

static void optim_run(neat_device *dev, const char *dname, const optim_case *oc, int64_t n,
                      uint64_t seed) {
    char ctx[200];
    snprintf(ctx, sizeof ctx, "%s %s n=%lld seed=%#llx", dname, oc->name, (long long)n,
             (unsigned long long)seed);
    tcase c = {dev, ctx, {0}, 0, 0};
    arena a = {{0}, 0};
    nt_rng rng = {seed};
    double *p = anew(&a, n), *g = anew(&a, n), *s1 = anew(&a, n), *s2 = anew(&a, n);
    double *ep = anew(&a, n), *e1 = anew(&a, n), *e2 = anew(&a, n), *got = anew(&a, n);
    double *tol = anew(&a, n);
    rand_fill(&rng, p, n, -1, 1);
    int uses_s1 = oc->adam || oc->sgd.momentum != 0.0f;
    int64_t sh[1] = {n}, shh[1] = {2};
    neat_tensor *P = mk(&c, 1, sh, p), *G = mk(&c, 1, sh, NULL), *H = mk(&c, 1, shh, NULL);
    neat_tensor *S1 = uses_s1 ? mk(&c, 1, sh, s1) : NULL; /* zeros: velocity or m */
    neat_tensor *S2 = oc->adam ? mk(&c, 1, sh, s2) : NULL;
    neat_cmdbuf *cb = NULL;
    if (c.failed || !setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx)) goto done;
    neat_status st = oc->adam ? neat_adam_update(cb, &oc->ad, H, P, G, S1, S2)
                              : neat_sgd_update(cb, &oc->sgd, H, P, G, S1);
    if (!CHECK_OK(st, ctx)) goto done;
    const double eps = EPS32;
    for (int t = 1; t <= 1000; t++) {
        double lr = schedule(oc->lr0, t), hyper[2] = {lr, t};
        rand_fill(&rng, g, n, -1, 1);
        upload(&c, G, g, n);
        upload(&c, H, hyper, 2);
        if (c.failed || !run(&c, cb)) goto done;
        for (int64_t i = 0; i < n; i++) { /* the error bounds, from the state before the step */
            if (oc->adam) {
                double b1 = oc->ad.beta1, b2 = oc->ad.beta2, ea = oc->ad.eps;
                double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
                double m = b1 * s1[i] + (1 - b1) * g[i], v = b2 * s2[i] + (1 - b2) * g[i] * g[i];
                e1[i] = b1 * e1[i] + 3 * eps * (b1 * fabs(s1[i]) + (1 - b1) * fabs(g[i]));
                e2[i] = b2 * e2[i] + 4 * eps * (b2 * s2[i] + (1 - b2) * g[i] * g[i]);
                /* bias corrections in float: b^t to a few ulp, then 1 - b^t */
                double rbc1 = (4 * eps * pow(b1, t) + eps * bc1) / bc1;
                double rbc2 = (4 * eps * pow(b2, t) + eps * bc2) / bc2;
                double mh = m / bc1, vh = v / bc2, sv = sqrt(vh), den = sv + ea;
                double emh = e1[i] / bc1 + fabs(mh) * (rbc1 + eps);
                double evh = e2[i] / bc2 + vh * (rbc2 + eps);
                double es = vh > 4 * evh ? evh / sv : sqrt(evh);
                double eden = es + eps * (sv + den), u = mh / den;
                double eu = emh / den + fabs(u) * eden / den + 2 * eps * fabs(u);
                double keep = 1 - lr * oc->ad.weight_decay;
                ep[i] = ep[i] * keep + lr * eu + 3 * eps * (fabs(p[i]) + lr * fabs(u)) +
                        eps * fabs(p[i]) * lr * oc->ad.weight_decay;
            } else {
                double mom = oc->sgd.momentum, wd = oc->sgd.weight_decay;
                double gg = g[i] + wd * p[i], eg = wd * ep[i] + 2 * eps * (fabs(g[i]) + wd * fabs(p[i]));
                double u = gg, eu = eg;
                if (mom != 0) {
                    double v = mom * s1[i] + gg;
                    e1[i] = mom * e1[i] + eg + 2 * eps * (mom * fabs(s1[i]) + fabs(gg));
                    u = oc->sgd.nesterov ? gg + mom * v : v;
                    eu = oc->sgd.nesterov ? eg + mom * e1[i] + 2 * eps * (fabs(gg) + mom * fabs(v))
                                          : e1[i];
                }
                ep[i] = ep[i] + lr * eu + 2 * eps * (fabs(p[i]) + lr * fabs(u));
            }
        }
        if (oc->adam) ref_adam_update(&oc->ad, lr, t, p, g, s1, s2, n);
        else ref_sgd_update(&oc->sgd, lr, p, g, uses_s1 ? s1 : NULL, n);
        if (t != 1 && t != 2 && t != 1000) continue;
        char what[48];
        const double *states[3] = {p, s1, s2}, *errs[3] = {ep, e1, e2};
        neat_tensor *ts[3] = {P, S1, S2};
        static const char *names[2][3] = {{"param", "velocity", ""}, {"param", "m", "v"}};
        for (int k = 0; k < 3; k++) {
            if (!ts[k]) continue;
            for (int64_t i = 0; i < n; i++) tol[i] = 4 * errs[k][i] + 1e-37;
            snprintf(what, sizeof what, "%s at step %d", names[oc->adam][k], t);
            if (download(&c, ts[k], got, n)) compare(&c, what, got, states[k], tol, n, 4e-5);
        }
    }
done:
    neat_cmdbuf_destroy(cb);
    tcase_free(&c);
    afree(&a);
}

static void test_optimizers(neat_device *dev, const char *dname) {
    static const optim_case cases[] = {
        {"sgd", 0, {0, 0, 0}, {0, 0, 0, 0}, 0.1f},
        {"sgd momentum 0.9", 0, {0.9f, 0, 0}, {0, 0, 0, 0}, 0.05f},
        {"sgd nesterov 0.9", 0, {0.9f, 0, 1}, {0, 0, 0, 0}, 0.05f},
        {"sgd momentum 0.9 weight_decay 0.01", 0, {0.9f, 0.01f, 0}, {0, 0, 0, 0}, 0.05f},
        {"sgd weight_decay 0.1", 0, {0, 0.1f, 0}, {0, 0, 0, 0}, 0.1f},
        {"adamw", 1, {0, 0, 0}, {0.9f, 0.999f, 1e-8f, 0.01f}, 1e-3f},
        {"adam eps 1e-3", 1, {0, 0, 0}, {0.8f, 0.99f, 1e-3f, 0}, 1e-2f},
    };
    static const int64_t sizes[] = {1, 1031};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (int si = 0; si < 2; si++)
            optim_run(dev, dname, &cases[i], sizes[si], g_seed + 7000 + 2 * i + (uint64_t)si);
}

/* ======== 5. matmul_batched ================================================================ */

typedef struct bmm_case { int64_t batch, m, n, k; int ta, tb; double alpha, beta; } bmm_case;

static void test_matmul_batched(neat_device *dev, const char *dname) {
    static const bmm_case cases[] = {
        {1, 1, 1, 1, 0, 0, 1, 0},      {3, 5, 7, 2, 0, 0, 1, 0},   {2, 17, 31, 33, 1, 0, 0.5, 0},
        {4, 65, 63, 64, 0, 1, 1, 1},   {5, 1, 129, 7, 1, 1, -2, 0.5}, {2, 33, 1, 255, 0, 0, 1, 0},
        {7, 16, 16, 16, 1, 1, 1, -1},  {0, 3, 4, 5, 0, 0, 1, 0},   {2, 0, 4, 5, 0, 1, 1, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const bmm_case *s = &cases[ci];
        uint64_t seed = g_seed + 8000 + ci;
        char ctx[200];
        snprintf(ctx, sizeof ctx, "%s matmul_batched b=%lld m=%lld n=%lld k=%lld ta=%d tb=%d alpha=%g beta=%g seed=%#llx",
                 dname, (long long)s->batch, (long long)s->m, (long long)s->n, (long long)s->k,
                 s->ta, s->tb, s->alpha, s->beta, (unsigned long long)seed);
        tcase c = {dev, ctx, {0}, 0, 0};
        arena a = {{0}, 0};
        nt_rng rng = {seed};
        int64_t na = s->batch * s->m * s->k, nb = s->batch * s->k * s->n, nc = s->batch * s->m * s->n;
        double *A = anew(&a, na), *B = anew(&a, nb), *C0 = anew(&a, nc), *ref = anew(&a, nc);
        double *abs = anew(&a, nc), *got = anew(&a, nc), *tol = anew(&a, nc);
        rand_fill(&rng, A, na, -1, 1), rand_fill(&rng, B, nb, -1, 1);
        rand_fill(&rng, C0, nc, -1, 1);
        memcpy(ref, C0, sizeof(double) * (size_t)nc);
        ref_matmul_batched(A, B, ref, abs, s->batch, s->m, s->n, s->k, s->alpha, s->beta, s->ta,
                           s->tb);
        /* forward tolerance: 2 K eps |A||B|, plus the roundings of alpha and beta terms */
        for (int64_t i = 0; i < nc; i++) tol[i] = 2 * (double)(s->k + 2) * EPS32 * abs[i] + 1e-37;
        int64_t sha[3] = {s->batch, s->ta ? s->k : s->m, s->ta ? s->m : s->k};
        int64_t shb[3] = {s->batch, s->tb ? s->n : s->k, s->tb ? s->k : s->n};
        int64_t shc[3] = {s->batch, s->m, s->n};
        /* beta 0: c starts as NaN, which must not propagate */
        neat_tensor *TA = mk(&c, 3, sha, A), *TB = mk(&c, 3, shb, B);
        neat_tensor *TC = mk(&c, 3, shc, s->beta != 0 ? C0 : NULL);
        neat_cmdbuf *cb = NULL;
        if (!c.failed && setup_ok(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create", ctx) &&
            recorded(neat_matmul_batched(cb, TA, TB, TC, (float)s->alpha, (float)s->beta, s->ta,
                                         s->tb), ctx) &&
            run(&c, cb) && download(&c, TC, got, nc))
            compare(&c, "c", got, ref, tol, nc, 1e-5);
        neat_cmdbuf_destroy(cb);
        tcase_free(&c);
        afree(&a);
    }
}

int main(void) {
    const char *env = getenv("NEATML_TEST_SEED");
    if (env && *env) g_seed = strtoull(env, NULL, 0);
    printf("training: seed base %#llx (NEATML_TEST_SEED overrides)\n", (unsigned long long)g_seed);
    check_references();

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
        test_optimizers(devs[d], names[d]);
        test_matmul_batched(devs[d], names[d]);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("training");
}
