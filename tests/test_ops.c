/*
 * test_ops.c — forward conformance of every op on every backend against the float64
 * reference (reference.c).
 *
 * Three passes per device:
 *   strict  every forward op, random float inputs, the DESIGN.md tolerances:
 *           elementwise and maxpool exact (the float32 rounding of the reference);
 *           matmul/linear/conv |got-ref| <= (2K+4) 2^-24 (|A||B|)_ij (K the reduction
 *           length; +4 covers the alpha, beta and bias roundings) and relative Frobenius
 *           <= 1e-5; smooth activations add 1e-5 |y| + 4 2^-24 (1+|z|);
 *           softmax |got-ref| <= 1e-5 ref + 1e-30; sum <= (log2 n + 1) 2^-24 sum|x|.
 *   int     integer inputs in [-4,4]: matmul, matmul_batched, linear and conv (none and
 *           relu) and the sums must be bit-exact (every partial sum is an exact float).
 *   tf32    always run, after neat_device_set_math_mode(TF32): matmul, matmul_batched,
 *           linear, conv with relative Frobenius <= 2e-3 (the CPU stays float32).
 * Every case writes NaN into its outputs first, reads them back through guarded host
 * buffers, and reads its inputs back to check they are bit for bit unchanged. Each case has
 * its own seed, derived from a base seed (NEATML_TEST_SEED overrides; printed at start);
 * a failure prints the seed and the shape.
 */
#include "harness.h"
#include "reference.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define EPS 0x1.0p-24
enum { MODE_STRICT, MODE_INT, MODE_TF32 };
static const char *const MODE_NAMES[] = {"strict", "int", "tf32"};

typedef struct ctx {
    neat_device *dev;
    const char *dev_name, *op;
    int mode;
    uint64_t base_seed, seed;
    char desc[200];
    int op_id, cases, failed_cases, case_failed;
} ctx;

static int expect(ctx *c, int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int expect(ctx *c, int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) return nt_check(1, file, line, "ok");
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->case_failed = 1;
    return nt_check(0, file, line, "%s %s [%s] seed=%llu %s: %s", c->dev_name, c->op,
                    MODE_NAMES[c->mode], (unsigned long long)c->seed, c->desc, msg);
}
#define EXPECT(c, cond, ...) expect((c), !!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* A function, not a macro over EXPECT: the status expression (often the call under test)
 * must be evaluated exactly once. */
static int expect_ok(ctx *c, neat_status st, const char *what, const char *file, int line) {
    return expect(c, st == NEAT_OK, file, line, "%s: %s (%s)", what, neat_status_string(st),
                  neat_last_error());
}
#define EXPECT_OK(c, st, what) expect_ok((c), (st), (what), __FILE__, __LINE__)

/* ---- cases and seeds ----------------------------------------------------------------- */

static void op_begin(ctx *c, int op_id, const char *op) {
    c->op_id = op_id;
    c->op = op;
    c->cases = c->failed_cases = 0;
}

static void op_end(ctx *c) {
    printf("%-5s %-6s %-16s %3d cases, %d failed\n", c->dev_name, MODE_NAMES[c->mode], c->op,
           c->cases, c->failed_cases);
}

/* Start case `idx` of the current op: derive its seed, name its shape. */
static nt_rng case_begin(ctx *c, int idx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static nt_rng case_begin(ctx *c, int idx, const char *fmt, ...) {
    nt_rng r = {c->base_seed ^ ((uint64_t)c->op_id << 40) ^ ((uint64_t)c->mode << 32) ^
                (uint64_t)idx};
    c->seed = nt_next(&r);
    r.s = c->seed;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->desc, sizeof c->desc, fmt, ap);
    va_end(ap);
    c->case_failed = 0;
    return r;
}

static void case_end(ctx *c) {
    c->cases++;
    c->failed_cases += c->case_failed;
}

/* ---- host/device tensor pairs ------------------------------------------------------- */

enum { F_UNIFORM, F_INT, F_NAN, F_WIDE, F_NEG, F_UNIT, F_GIVEN };

/* A device tensor and the host contents last written to it (a guarded buffer). */
typedef struct ht {
    neat_tensor *t;
    float *v;
    int64_t n;
} ht;

static int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* "[2,3,5]", "[]" for a scalar. */
typedef struct dims_str { char s[80]; } dims_str;
static dims_str dims(int ndim, const int64_t *shape) {
    dims_str d = {"["};
    for (int i = 0; i < ndim; i++)
        snprintf(d.s + strlen(d.s), sizeof d.s - strlen(d.s), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
    strcat(d.s, "]");
    return d;
}

/* The input fill of the current mode: small integers in the int pass. */
static int in_fill(const ctx *c) { return c->mode == MODE_INT ? F_INT : F_UNIFORM; }

static void fill(float *v, int64_t n, int how, nt_rng *r) {
    for (int64_t i = 0; i < n; i++) switch (how) {
        case F_UNIFORM: v[i] = (float)nt_uniform(r, -1, 1); break;
        case F_INT: v[i] = (float)nt_randint(r, -4, 4); break;
        case F_NAN: v[i] = NAN; break;
        case F_WIDE: v[i] = (float)nt_uniform(r, -8, 8); break;
        case F_NEG: v[i] = (float)nt_uniform(r, -3, -1); break;
        case F_UNIT: v[i] = (float)nt_uniform(r, 0, 1); break;
        default: break;
        }
}

/* Create a tensor of the shape, fill its host copy as `how` says and write it. */
static int ht_make(ctx *c, ht *h, int ndim, const int64_t *shape, int how, nt_rng *r) {
    h->n = numel(ndim, shape);
    h->v = nt_alloc(h->n);
    h->t = NULL;
    if (!EXPECT(c, h->v != NULL, "host allocation of %lld floats", (long long)h->n)) return 0;
    fill(h->v, h->n, how, r);
    if (!EXPECT_OK(c, neat_tensor_create(c->dev, ndim, shape, &h->t), "neat_tensor_create"))
        return 0;
    return EXPECT_OK(c, neat_tensor_write(h->t, h->v, h->n), "neat_tensor_write");
}

/* Rewrite the tensor from its host copy (after the caller changed h->v). */
static int ht_upload(ctx *c, ht *h) {
    return EXPECT_OK(c, neat_tensor_write(h->t, h->v, h->n), "neat_tensor_write");
}

static void ht_free(ht *h) {
    neat_tensor_destroy(h->t);
    nt_free(h->v);
    h->t = NULL;
    h->v = NULL;
}

/* A double array of n elements (at least one, so that n = 0 is not a NULL). */
static double *dnew(int64_t n) { return malloc(sizeof(double) * (size_t)(n + 1)); }

static double *to_double(const float *v, int64_t n) {
    double *d = dnew(n);
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* Read the tensor into a new guarded buffer (prefilled with NaN) and check its guards. */
static float *ht_read(ctx *c, const ht *h, const char *name) {
    float *got = nt_alloc(h->n);
    nt_poison(got, h->n);
    EXPECT_OK(c, neat_tensor_read(h->t, got, h->n), name);
    EXPECT(c, nt_guard_ok(got, h->n), "%s: guard band of the host buffer overwritten", name);
    return got;
}

/* An op must not touch its inputs: read back, compare bit for bit. */
static void ht_unchanged(ctx *c, const ht *h, const char *name) {
    float *got = ht_read(c, h, name);
    EXPECT(c, memcmp(got, h->v, sizeof(float) * (size_t)h->n) == 0,
           "input %s was modified by the op", name);
    nt_free(got);
}

/* Record with `st`, then commit and wait. */
static int run(ctx *c, neat_cmdbuf *cb, neat_status st) {
    if (!EXPECT_OK(c, st, "record")) return 0;
    if (!EXPECT_OK(c, neat_cmdbuf_commit(cb), "neat_cmdbuf_commit")) return 0;
    return EXPECT_OK(c, neat_cmdbuf_wait(cb), "neat_cmdbuf_wait");
}

/* ---- comparison ------------------------------------------------------------------- */

/* got against ref over n elements. tol == NULL: exact, got must equal the float32 rounding
 * of ref; tol given: |got - ref| <= tol[i]; skip_elem: no per-element test. rel >= 0 adds
 * ||got - ref||_F <= rel ||ref||_F. NaN (an element never written) fails every test. */
static void compare(ctx *c, const char *name, const float *got, const double *ref,
                    const double *tol, int skip_elem, int64_t n, double rel) {
    int64_t bad = 0, first = -1;
    double diff2 = 0, ref2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - ref[i];
        int ok = skip_elem ? !isnan(got[i]) : tol ? fabs(d) <= tol[i] : got[i] == (float)ref[i];
        if (!ok && bad++ == 0) first = i;
        diff2 += d * d;
        ref2 += ref[i] * ref[i];
    }
    if (!EXPECT(c, bad == 0,
                "%s: %lld of %lld elements wrong, first [%lld] got %.9g want %.9g tol %.3g", name,
                (long long)bad, (long long)n, (long long)first,
                first >= 0 ? got[first] : 0.0, first >= 0 ? ref[first] : 0.0,
                first >= 0 && tol ? tol[first] : 0.0))
        return;
    if (rel >= 0)
        EXPECT(c, sqrt(diff2) <= rel * sqrt(ref2), "%s: relative Frobenius error %.3g > %.3g",
               name, sqrt(diff2) / sqrt(ref2), rel);
}

/* Largest slope of each activation: how far an error of z moves act(z). */
static double act_slope(neat_activation act) {
    return act == NEAT_ACT_SIGMOID ? 0.25 : act == NEAT_ACT_GELU ? 1.13 : 1.0;
}

static int act_smooth(neat_activation act) {
    return act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH || act == NEAT_ACT_GELU;
}

/* Check a matmul-like output y = act(z), z a k-term dot product with error scale abs[i].
 * Per mode: int bit-exact; tf32 relative Frobenius 2e-3; strict the per-element bound plus
 * the activation's own error, and relative Frobenius 1e-5. */
static void check_gemm(ctx *c, const char *name, const float *got, const double *ref,
                       const double *z, const double *abs, int64_t n, int64_t k,
                       neat_activation act) {
    if (c->mode == MODE_INT) {
        compare(c, name, got, ref, NULL, 0, n, -1);
        return;
    }
    if (c->mode == MODE_TF32) {
        compare(c, name, got, ref, NULL, 1, n, 2e-3);
        return;
    }
    double *tol = dnew(n);
    for (int64_t i = 0; i < n; i++) {
        tol[i] = act_slope(act) * (2.0 * (double)k + 4) * EPS * abs[i];
        if (act_smooth(act)) tol[i] += 1e-5 * fabs(ref[i]) + 4 * EPS * (1 + fabs(z[i]));
    }
    compare(c, name, got, ref, tol, 0, n, 1e-5);
    free(tol);
}

/* ---- matmul and matmul_batched ------------------------------------------------------- */

static const int64_t SIZES[] = {0, 1, 2, 3, 7, 13, 31, 63, 64, 65, 127, 129, 255, 257};
#define NSIZES ((int)(sizeof SIZES / sizeof SIZES[0]))
static int64_t draw_size(nt_rng *r, int max_index) {
    return SIZES[nt_randint(r, 0, max_index < NSIZES - 1 ? max_index : NSIZES - 1)];
}

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
    nt_rng r = case_begin(c, idx, "batch=%lld m=%lld n=%lld k=%lld ta=%d tb=%d alpha=%g beta=%g",
                          (long long)batch, (long long)m, (long long)n, (long long)k, ta, tb,
                          alpha, beta);
    int nd = batch ? 3 : 2, o = batch ? 1 : 0;
    int64_t as[3] = {batch}, bs[3] = {batch}, cs[3] = {batch};
    as[o] = ta ? k : m, as[o + 1] = ta ? m : k;
    bs[o] = tb ? n : k, bs[o + 1] = tb ? k : n;
    cs[o] = m, cs[o + 1] = n;
    ht A = {0}, B = {0}, C = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &A, nd, as, in_fill(c), &r) && ht_make(c, &B, nd, bs, in_fill(c), &r) &&
        ht_make(c, &C, nd, cs, beta == 0 ? F_NAN : in_fill(c), &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, batch ? neat_matmul_batched(cb, A.t, B.t, C.t, alpha, beta, ta, tb)
                         : neat_matmul(cb, A.t, B.t, C.t, alpha, beta, ta, tb))) {
        float *got = ht_read(c, &C, "c");
        double *a = to_double(A.v, A.n), *b = to_double(B.v, B.n), *ref = to_double(C.v, C.n);
        double *abs = dnew(C.n);
        ref_matmul_batched(a, b, ref, abs, batch ? batch : 1, m, n, k, alpha, beta, ta, tb);
        check_gemm(c, "c", got, ref, ref, abs, C.n, k, NEAT_ACT_NONE);
        ht_unchanged(c, &A, "a");
        ht_unchanged(c, &B, "b");
        free(a), free(b), free(ref), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&A), ht_free(&B), ht_free(&C);
    case_end(c);
}

static void test_matmul(ctx *c) {
    static const int64_t table[][5] = {
        /* m, n, k, trans_a, trans_b */
        {1, 1, 1, 0, 0},       {0, 5, 3, 0, 0},      {5, 0, 3, 1, 0},     {4, 6, 0, 0, 1},
        {3, 7, 13, 0, 0},      {7, 13, 31, 1, 0},    {13, 31, 7, 0, 1},   {31, 3, 127, 1, 1},
        {63, 65, 129, 0, 0},   {65, 63, 127, 1, 0},  {129, 127, 65, 0, 1}, {255, 1, 257, 0, 0},
        {1, 257, 255, 1, 1},   {64, 64, 64, 0, 0},   {2, 3, 5, 1, 1},     {127, 129, 63, 1, 1}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    op_begin(c, 1, "matmul");
    for (; idx < nt; idx++)
        matmul_case(c, idx, 0, table[idx][0], table[idx][1], table[idx][2], (int)table[idx][3],
                    (int)table[idx][4]);
    nt_rng draw = {c->base_seed + 101};
    while (idx < 26) {
        int64_t m = draw_size(&draw, 13), n = draw_size(&draw, 13), k = draw_size(&draw, 13);
        if (m * n * k > 2200000) continue;
        matmul_case(c, idx++, 0, m, n, k, (int)nt_randint(&draw, 0, 1),
                    (int)nt_randint(&draw, 0, 1));
    }
    op_end(c);

    static const int64_t btable[][4] = {
        /* batch, m, n, k */
        {1, 1, 1, 1},  {0, 3, 4, 5},   {3, 0, 4, 5},    {2, 7, 13, 0},  {3, 7, 13, 31},
        {5, 31, 7, 13}, {2, 63, 65, 129}, {7, 1, 127, 3}, {4, 65, 1, 63}, {2, 129, 31, 64},
        {13, 3, 3, 3}, {1, 127, 2, 257}};
    nt = (int)(sizeof btable / sizeof btable[0]);
    op_begin(c, 2, "matmul_batched");
    for (idx = 0; idx < nt; idx++)
        matmul_case(c, idx, btable[idx][0], btable[idx][1], btable[idx][2], btable[idx][3],
                    idx % 2, (idx / 2) % 2);
    while (idx < 24) {
        int64_t b = SIZES[nt_randint(&draw, 1, 5)], m = draw_size(&draw, 11),
                n = draw_size(&draw, 11), k = draw_size(&draw, 11);
        if (b * m * n * k > 1500000) continue;
        matmul_case(c, idx++, b, m, n, k, (int)nt_randint(&draw, 0, 1),
                    (int)nt_randint(&draw, 0, 1));
    }
    op_end(c);
}

/* ---- linear_forward -------------------------------------------------------------------- */

static void linear_case(ctx *c, int idx, int64_t n, int64_t in, int64_t out, int bias,
                        neat_activation act) {
    nt_rng r = case_begin(c, idx, "n=%lld in=%lld out=%lld bias=%d act=%d", (long long)n,
                          (long long)in, (long long)out, bias, (int)act);
    ht X = {0}, W = {0}, Bv = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    int ok = ht_make(c, &X, 2, (int64_t[]){n, in}, in_fill(c), &r) &&
             ht_make(c, &W, 2, (int64_t[]){out, in}, in_fill(c), &r) &&
             (!bias || ht_make(c, &Bv, 1, (int64_t[]){out}, in_fill(c), &r)) &&
             ht_make(c, &Y, 2, (int64_t[]){n, out}, F_NAN, &r) &&
             EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create");
    if (ok && run(c, cb, neat_linear_forward(cb, X.t, W.t, Bv.t, act, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = to_double(X.v, X.n), *w = to_double(W.v, W.n);
        double *b = bias ? to_double(Bv.v, Bv.n) : NULL;
        double *y = dnew(Y.n), *z = dnew(Y.n),
               *abs = dnew(Y.n);
        ref_linear_forward(x, w, b, act, y, z, abs, n, in, out);
        check_gemm(c, "y", got, y, z, abs, Y.n, in + 1, act);
        ht_unchanged(c, &X, "x");
        ht_unchanged(c, &W, "w");
        if (bias) ht_unchanged(c, &Bv, "b");
        free(x), free(w), free(b), free(y), free(z), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&W), ht_free(&Bv), ht_free(&Y);
    case_end(c);
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
    op_begin(c, 3, "linear_forward");
    /* Every activation with and without bias on the table, then random draws. */
    for (; idx < nt; idx++)
        linear_case(c, idx, table[idx][0], table[idx][1], table[idx][2], (idx / 5) % 2 == 0,
                    pick_act(c, idx));
    nt_rng draw = {c->base_seed + 103};
    while (idx < 30) {
        int64_t n = draw_size(&draw, 12), in = draw_size(&draw, 13), out = draw_size(&draw, 13);
        if (n * in * out > 2000000) continue;
        linear_case(c, idx, n, in, out, (int)nt_randint(&draw, 0, 1), pick_act(c, idx));
        idx++;
    }
    op_end(c);
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
    nt_rng r = case_begin(c, idx, "%s k=%lld dil=%lldx%lld groups=%lld bias=%d act=%d",
                          conv_str(s).s, (long long)s->k, (long long)s->dh, (long long)s->dw,
                          (long long)s->groups, bias, (int)act);
    int64_t p = ref_conv_out(s->h, s->kh, s->sh, s->ph, s->dh);
    int64_t q = ref_conv_out(s->w, s->kw, s->sw, s->pw, s->dw);
    neat_conv2d_desc d = {s->kh, s->kw, s->sh, s->sw, s->ph, s->pw, s->dh, s->dw, s->groups};
    ht X = {0}, W = {0}, Bv = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    int ok = ht_make(c, &X, 4, (int64_t[]){s->n, s->c, s->h, s->w}, in_fill(c), &r) &&
             ht_make(c, &W, 4, (int64_t[]){s->k, s->c / s->groups, s->kh, s->kw}, in_fill(c), &r) &&
             (!bias || ht_make(c, &Bv, 1, (int64_t[]){s->k}, in_fill(c), &r)) &&
             ht_make(c, &Y, 4, (int64_t[]){s->n, s->k, p, q}, F_NAN, &r) &&
             EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create");
    if (ok && run(c, cb, neat_conv2d_forward(cb, &d, X.t, W.t, Bv.t, act, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = to_double(X.v, X.n), *w = to_double(W.v, W.n);
        double *b = bias ? to_double(Bv.v, Bv.n) : NULL;
        double *y = dnew(Y.n), *z = dnew(Y.n),
               *abs = dnew(Y.n);
        ref_conv2d_forward(s, x, w, b, act, y, z, abs);
        check_gemm(c, "y", got, y, z, abs, Y.n, s->c / s->groups * s->kh * s->kw + 1, act);
        ht_unchanged(c, &X, "x");
        ht_unchanged(c, &W, "w");
        if (bias) ht_unchanged(c, &Bv, "b");
        free(x), free(w), free(b), free(y), free(z), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&W), ht_free(&Bv), ht_free(&Y);
    case_end(c);
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
    op_begin(c, 4, "conv2d_forward");
    for (; idx < nt; idx++) conv_case(c, idx, &table[idx], idx % 3 != 2, pick_act(c, idx));
    nt_rng draw = {c->base_seed + 107};
    static const int64_t hw[] = {1, 3, 7, 13, 16, 31};
    while (idx < 30) {
        ref_conv_shape s = {0};
        s.groups = nt_randint(&draw, 1, 3);
        s.n = nt_randint(&draw, 1, 3);
        s.c = s.groups * SIZES[nt_randint(&draw, 1, 4)];
        s.k = s.groups * SIZES[nt_randint(&draw, 1, 4)];
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
    op_end(c);
}

/* ---- maxpool2d ----------------------------------------------------------------------------- */

static void maxpool_case(ctx *c, int idx, const ref_conv_shape *s) {
    nt_rng r = case_begin(c, idx, "%s", conv_str(s).s);
    int64_t p = ref_conv_out(s->h, s->kh, s->sh, s->ph, 1);
    int64_t q = ref_conv_out(s->w, s->kw, s->sw, s->pw, 1);
    neat_pool2d_desc d = {s->kh, s->kw, s->sh, s->sw, s->ph, s->pw};
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    /* Half the cases all negative: padding counted as 0 instead of -inf would show. */
    if (ht_make(c, &X, 4, (int64_t[]){s->n, s->c, s->h, s->w}, idx % 2 ? F_NEG : F_UNIFORM, &r) &&
        ht_make(c, &Y, 4, (int64_t[]){s->n, s->c, p, q}, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, neat_maxpool2d(cb, &d, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = to_double(X.v, X.n), *y = dnew(Y.n);
        ref_maxpool2d(s, x, y);
        compare(c, "y", got, y, NULL, 0, Y.n, -1);
        ht_unchanged(c, &X, "x");
        free(x), free(y), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    case_end(c);
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
    op_begin(c, 5, "maxpool2d");
    for (; idx < nt; idx++) maxpool_case(c, idx, &table[idx]);
    nt_rng draw = {c->base_seed + 109};
    while (idx < 26) {
        ref_conv_shape s = {0};
        s.n = nt_randint(&draw, 1, 3), s.c = SIZES[nt_randint(&draw, 1, 5)];
        s.h = SIZES[nt_randint(&draw, 1, 9)], s.w = SIZES[nt_randint(&draw, 1, 9)];
        s.kh = nt_randint(&draw, 1, 4), s.kw = nt_randint(&draw, 1, 4);
        s.sh = nt_randint(&draw, 1, 3), s.sw = nt_randint(&draw, 1, 3);
        s.ph = nt_randint(&draw, 0, s.kh / 2), s.pw = nt_randint(&draw, 0, s.kw / 2);
        s.k = s.c, s.dh = s.dw = s.groups = 1;
        if (ref_conv_out(s.h, s.kh, s.sh, s.ph, 1) < 1 ||
            ref_conv_out(s.w, s.kw, s.sw, s.pw, 1) < 1)
            continue;
        maxpool_case(c, idx++, &s);
    }
    op_end(c);
}

/* ---- sums ----------------------------------------------------------------------------------- */

/* Sum of n terms: error <= (log2 n + 1) 2^-24 sum|x| (the documented pairwise bound). */
static double sum_tol(int64_t n, double abs) {
    return (log2((double)(n > 1 ? n : 1)) + 1) * EPS * abs;
}

static void sum_all_case(ctx *c, int idx, int ndim, const int64_t *shape) {
    nt_rng r = case_begin(c, idx, "x=%s", dims(ndim, shape).s);
    /* y: one element, as [1], [1,1] or a scalar */
    static const int64_t one[2] = {1, 1};
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, ndim, shape, in_fill(c), &r) &&
        ht_make(c, &Y, idx % 3, one, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, neat_sum_all(cb, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = to_double(X.v, X.n), abs;
        double ref = ref_sum_all(x, X.n, &abs), tol = sum_tol(X.n, abs);
        compare(c, "y", got, &ref, c->mode == MODE_INT ? NULL : &tol, 0, 1, -1);
        ht_unchanged(c, &X, "x");
        free(x), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    case_end(c);
}

static void sum_axis_case(ctx *c, int idx, int ndim, const int64_t *shape, int axis) {
    int keep = idx % 2; /* y with the axis set to 1, or removed */
    nt_rng r = case_begin(c, idx, "x=%s axis=%d keepdim=%d", dims(ndim, shape).s, axis, keep);
    int64_t ys[4], outer = 1, inner = 1;
    int yd = 0;
    for (int i = 0; i < ndim; i++) {
        if (i < axis) outer *= shape[i];
        if (i > axis) inner *= shape[i];
        if (i != axis) ys[yd++] = shape[i];
        else if (keep) ys[yd++] = 1;
    }
    if (yd == 0) ys[yd++] = 1; /* a 1-D x sums into [1] */
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, ndim, shape, in_fill(c), &r) && ht_make(c, &Y, yd, ys, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, neat_sum_axis(cb, X.t, axis, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = to_double(X.v, X.n), *y = dnew(Y.n),
               *abs = dnew(Y.n);
        ref_sum_axis(x, y, abs, outer, shape[axis], inner);
        for (int64_t i = 0; i < Y.n; i++) abs[i] = sum_tol(shape[axis], abs[i]);
        compare(c, "y", got, y, c->mode == MODE_INT ? NULL : abs, 0, Y.n, -1);
        ht_unchanged(c, &X, "x");
        free(x), free(y), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    case_end(c);
}

typedef struct shape_row { int ndim; int64_t s[4]; } shape_row;

/* A random shape of 1..4 dimensions and at most `cap` elements. */
static shape_row draw_shape(nt_rng *r, int64_t cap) {
    shape_row row;
    do {
        row.ndim = (int)nt_randint(r, 1, 4);
        for (int i = 0; i < 4; i++) row.s[i] = i < row.ndim ? draw_size(r, 15 - 2 * row.ndim) : 0;
    } while (numel(row.ndim, row.s) > cap);
    return row;
}

static void test_sums(ctx *c) {
    static const shape_row table[] = {
        {1, {0}},        {1, {1}},          {1, {3}},           {2, {7, 13}},   {1, {127}},
        {4, {2, 3, 5, 7}}, {2, {255, 257}}, {1, {65537}},       {4, {1, 1, 1, 1}}, {2, {63, 65}},
        {0, {0}},        {2, {0, 5}},       {3, {129, 31, 2}},  {1, {1 << 20}}, {3, {4, 0, 3}},
        {2, {1, 4097}}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    op_begin(c, 6, "sum_all");
    for (; idx < nt; idx++) sum_all_case(c, idx, table[idx].ndim, table[idx].s);
    nt_rng draw = {c->base_seed + 113};
    for (; idx < 26; idx++) {
        shape_row row = draw_shape(&draw, 300000);
        sum_all_case(c, idx, row.ndim, row.s);
    }
    op_end(c);

    op_begin(c, 7, "sum_axis");
    idx = 0;
    for (int i = 0; i < nt; i++)
        for (int axis = 0; axis < table[i].ndim; axis++)
            if (numel(table[i].ndim, table[i].s) <= 100000)
                sum_axis_case(c, idx++, table[i].ndim, table[i].s, axis);
    for (int end = idx + 12; idx < end; idx++) {
        shape_row row = draw_shape(&draw, 200000);
        sum_axis_case(c, idx, row.ndim, row.s, (int)nt_randint(&draw, 0, row.ndim - 1));
    }
    op_end(c);
}

/* 10^7 uniform [0,1) values: the sum within 1e-6 of the float64 sum (a naive float32 loop
 * is off by ~1e-3 here). */
static void test_sum_large(ctx *c) {
    op_begin(c, 8, "sum_all_1e7");
    int64_t n = 10000000;
    nt_rng r = case_begin(c, 0, "x=[%lld] uniform [0,1)", (long long)n);
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, 1, &n, F_UNIT, &r) && ht_make(c, &Y, 1, (int64_t[]){1}, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, neat_sum_all(cb, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double ref = 0;
        for (int64_t i = 0; i < n; i++) ref += X.v[i];
        EXPECT(c, fabs(got[0] - ref) <= 1e-6 * ref, "got %.9g want %.9g (rel %.3g)", got[0], ref,
               fabs(got[0] - ref) / ref);
        nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    case_end(c);
    op_end(c);
}

/* ---- softmax, activation, add, scale, fill ------------------------------------------------- */

/* Rows cycle through: ordinary [-8,8); all above 88.7 (exp overflows float32 without the
 * max subtraction); all near -1000 (exp underflows to 0 without it); a spread of -1000..100. */
static void fill_softmax(float *v, int64_t rows, int64_t cols, nt_rng *r) {
    static const double lo[] = {-8, 88.7, -1005, -1000}, hi[] = {8, 120, -995, 100};
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            v[i * cols + j] = (float)nt_uniform(r, lo[i % 4], hi[i % 4]);
}

static void softmax_case(ctx *c, int idx, int ndim, const int64_t *shape, int inplace) {
    nt_rng r = case_begin(c, idx, "x=%s inplace=%d", dims(ndim, shape).s, inplace);
    int64_t cols = shape[ndim - 1], rows = numel(ndim - 1, shape);
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, ndim, shape, F_GIVEN, &r)) {
        fill_softmax(X.v, rows, cols, &r);
        ht_upload(c, &X);
    }
    if (X.t && (inplace || ht_make(c, &Y, ndim, shape, F_NAN, &r)) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        run(c, cb, neat_softmax(cb, X.t, inplace ? X.t : Y.t))) {
        ht out = inplace ? X : Y;
        float *got = ht_read(c, &out, "y");
        double *x = to_double(X.v, X.n), *tol = dnew(X.n);
        ref_softmax(x, x, rows, cols);
        for (int64_t i = 0; i < X.n; i++) tol[i] = 1e-5 * x[i] + 1e-30;
        compare(c, "y", got, x, tol, 0, X.n, -1);
        if (!inplace) ht_unchanged(c, &X, "x");
        free(x), free(tol), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    case_end(c);
}

static void test_softmax(ctx *c) {
    static const shape_row table[] = {
        {2, {1, 1}},   {2, {0, 5}},     {2, {3, 0}},       {2, {1, 7}},     {2, {4, 13}},
        {2, {13, 31}}, {2, {7, 127}},   {2, {31, 129}},    {2, {4, 1000}},  {2, {2, 4097}},
        {3, {3, 5, 7}}, {4, {2, 3, 4, 255}}, {2, {64, 10}}, {1, {257}},      {2, {8, 63}},
        {2, {9, 65}}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    op_begin(c, 9, "softmax");
    for (; idx < nt; idx++) softmax_case(c, idx, table[idx].ndim, table[idx].s, idx % 4 == 3);
    nt_rng draw = {c->base_seed + 127};
    for (; idx < 26; idx++) {
        shape_row row = draw_shape(&draw, 200000);
        softmax_case(c, idx, row.ndim, row.s, idx % 4 == 3);
    }
    op_end(c);
}

/* The elementwise ops, one case each: op 0 activation (param = act), 1 add (param =
 * broadcast: 0 none, 1 b is [n], 2 b is [1,n]), 2 scale (alpha), 3 fill (value).
 * inplace: out is the first input. All exact except the smooth activations. */
enum { EW_ACT, EW_ADD, EW_SCALE, EW_FILL };

static void elementwise_case(ctx *c, int idx, int kind, int ndim, const int64_t *shape,
                             double param, int inplace) {
    nt_rng r = case_begin(c, idx, "x=%s param=%g inplace=%d", dims(ndim, shape).s, param, inplace);
    int64_t cols = ndim ? shape[ndim - 1] : 1, n = numel(ndim, shape), rows = cols ? n / cols : 0;
    int bcast = kind == EW_ADD ? (int)param : 0;
    int64_t row2[2] = {1, cols}; /* b as [1,n] */
    const int64_t *bshape = bcast == 2 ? row2 : bcast == 1 ? &cols : shape;
    ht X = {0}, B = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    int ok = ht_make(c, &X, ndim, shape, kind == EW_FILL ? F_NAN : F_WIDE, &r) &&
             (kind != EW_ADD || ht_make(c, &B, bcast ? bcast : ndim, bshape, F_WIDE, &r)) &&
             (inplace || kind == EW_FILL || ht_make(c, &Y, ndim, shape, F_NAN, &r)) &&
             EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create");
    neat_tensor *out = inplace ? X.t : Y.t;
    neat_status st = NEAT_OK;
    if (ok) switch (kind) {
        case EW_ACT: st = neat_activation_forward(cb, (neat_activation)param, X.t, out); break;
        case EW_ADD: st = neat_add(cb, X.t, B.t, out); break;
        case EW_SCALE: st = neat_scale(cb, X.t, (float)param, out); break;
        default: st = neat_fill(cb, X.t, (float)param); break;
        }
    if (ok && run(c, cb, st)) {
        int in_out = inplace || kind == EW_FILL;
        float *got = ht_read(c, in_out ? &X : &Y, "out");
        double *x = to_double(X.v, X.n), *tol = NULL;
        if (kind == EW_ACT) {
            neat_activation act = (neat_activation)param;
            if (act_smooth(act)) {
                tol = dnew(n);
                for (int64_t i = 0; i < n; i++)
                    tol[i] = 1e-5 * fabs(ref_act(act, x[i])) + 4 * EPS * (1 + fabs(x[i]));
            }
            ref_activation(act, x, x, n);
        } else if (kind == EW_ADD) {
            double *b = to_double(B.v, B.n);
            ref_add(x, b, x, rows, cols, bcast);
            free(b);
        } else if (kind == EW_SCALE) {
            ref_scale(x, (float)param, x, n);
        } else {
            for (int64_t i = 0; i < n; i++) x[i] = (float)param;
        }
        compare(c, "out", got, x, tol, 0, n, -1);
        if (!in_out) ht_unchanged(c, &X, "x");
        if (kind == EW_ADD) ht_unchanged(c, &B, "b");
        free(x), free(tol), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&B), ht_free(&Y);
    case_end(c);
}

static void test_elementwise(ctx *c) {
    static const shape_row table[] = {
        {1, {0}},         {1, {1}},          {1, {7}},        {2, {13, 31}},   {2, {257, 65}},
        {4, {3, 5, 7, 11}}, {2, {0, 3}},     {3, {2, 63, 129}}, {1, {4099}},   {2, {127, 255}},
        {0, {0}},         {2, {1, 1}}};
    int nt = (int)(sizeof table / sizeof table[0]);
    static const double alphas[] = {0, 1, -1, 0.3, 2.5, -1e-3};
    static const double values[] = {0, -1.5, 3e38, 1e-40, 7};
    static const char *const names[] = {"activation", "add", "scale", "fill"};
    for (int kind = EW_ACT; kind <= EW_FILL; kind++) {
        op_begin(c, 10 + kind, names[kind]);
        nt_rng draw = {c->base_seed + 131 + (uint64_t)kind};
        int count = kind == EW_ACT ? 40 : 24;
        for (int idx = 0; idx < count; idx++) {
            shape_row row = idx < nt ? table[idx] : draw_shape(&draw, 300000);
            /* add broadcasts a row: a needs a last dimension */
            if (kind == EW_ADD && row.ndim == 0) row = (shape_row){1, {5}};
            double param = kind == EW_ACT ? idx % 5 : kind == EW_ADD ? idx % 3
                         : kind == EW_SCALE ? alphas[idx % 6] : values[idx % 5];
            elementwise_case(c, idx, kind, row.ndim, row.s, param, kind != EW_FILL && idx % 4 == 1);
        }
        op_end(c);
    }
}

/* ---- driver -------------------------------------------------------------------------------- */

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    const char *env = getenv("NEATML_TEST_SEED");
    uint64_t base = env && *env ? strtoull(env, NULL, 0) : 20240611;
    printf("test_ops: base seed %llu (NEATML_TEST_SEED overrides)\n", (unsigned long long)base);
    for (int d = 0; d < ndev; d++) {
        ctx c = {.dev = devs[d], .dev_name = names[d], .base_seed = base, .mode = MODE_STRICT};
        test_matmul(&c);
        test_linear(&c);
        test_conv(&c);
        test_maxpool(&c);
        test_sums(&c);
        test_sum_large(&c);
        test_softmax(&c);
        test_elementwise(&c);

        c.mode = MODE_INT;
        test_matmul(&c);
        test_linear(&c);
        test_conv(&c);
        test_sums(&c);

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
    return nt_finish("ops");
}
