/*
 * test_ops_elementwise.c — forward conformance of the sums, softmax and the elementwise ops
 * (activation, add, scale, fill) on every backend, against the float64 reference
 * (reference.c).
 *
 * Two passes per device:
 *   strict  random float inputs, the DESIGN.md tolerances: elementwise exact (the float32
 *           rounding of the reference); smooth activations 1e-5 |y| + 4 2^-24 (1+|x|);
 *           softmax |got-ref| <= 1e-5 ref + 1e-30; sum <= (log2 n + 1) 2^-24 sum|x|, and
 *           a sum of 10^7 values within 1e-6 relative.
 *   int     integer inputs in [-4,4]: the sums must be bit-exact (every partial sum is an
 *           exact float).
 * Every case writes NaN into its outputs first, reads them back through guarded host
 * buffers, and reads its inputs back to check they are bit for bit unchanged (unless the
 * case runs in place). Each case has its own seed, derived from a base seed
 * (NEATML_TEST_SEED overrides; printed at start); a failure prints the seed and the shape.
 * matmul, linear, conv and maxpool are in test_ops_layers.c.
 */
#include "harness.h"
#include "reference.h"
#include "util_ops.h"

#include <math.h>
#include <stdlib.h>

/* ---- sums ----------------------------------------------------------------------------------- */

/* Sum of n terms: error <= (log2 n + 1) 2^-24 sum|x| (the documented pairwise bound). */
static double sum_tol(int64_t n, double abs) {
    return (log2((double)(n > 1 ? n : 1)) + 1) * EPS * abs;
}

static void sum_all_case(ctx *c, int idx, int ndim, const int64_t *shape) {
    nt_rng r = ops_case_begin(c, idx, "x=%s", ops_dims(ndim, shape).s);
    /* y: one element, as [1], [1,1] or a scalar */
    static const int64_t one[2] = {1, 1};
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, ndim, shape, ops_in_fill(c), &r) &&
        ht_make(c, &Y, idx % 3, one, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, neat_sum_all(cb, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = ops_to_double(X.v, X.n), abs;
        double ref = ref_sum_all(x, X.n, &abs), tol = sum_tol(X.n, abs);
        ops_compare(c, "y", got, &ref, c->mode == MODE_INT ? NULL : &tol, 0, 1, -1);
        ht_unchanged(c, &X, "x");
        free(x), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    ops_case_end(c);
}

static void sum_axis_case(ctx *c, int idx, int ndim, const int64_t *shape, int axis) {
    int keep = idx % 2; /* y with the axis set to 1, or removed */
    nt_rng r = ops_case_begin(c, idx, "x=%s axis=%d keepdim=%d", ops_dims(ndim, shape).s, axis,
                              keep);
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
    if (ht_make(c, &X, ndim, shape, ops_in_fill(c), &r) && ht_make(c, &Y, yd, ys, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, neat_sum_axis(cb, X.t, axis, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double *x = ops_to_double(X.v, X.n), *y = ops_dnew(Y.n),
               *abs = ops_dnew(Y.n);
        ref_sum_axis(x, y, abs, outer, shape[axis], inner);
        for (int64_t i = 0; i < Y.n; i++) abs[i] = sum_tol(shape[axis], abs[i]);
        ops_compare(c, "y", got, y, c->mode == MODE_INT ? NULL : abs, 0, Y.n, -1);
        ht_unchanged(c, &X, "x");
        free(x), free(y), free(abs), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    ops_case_end(c);
}

typedef struct shape_row { int ndim; int64_t s[4]; } shape_row;

/* A random shape of 1..4 dimensions and at most `cap` elements. */
static shape_row draw_shape(nt_rng *r, int64_t cap) {
    shape_row row;
    do {
        row.ndim = (int)nt_randint(r, 1, 4);
        for (int i = 0; i < 4; i++)
            row.s[i] = i < row.ndim ? ops_draw_size(r, 15 - 2 * row.ndim) : 0;
    } while (ops_numel(row.ndim, row.s) > cap);
    return row;
}

static void test_sums(ctx *c) {
    static const shape_row table[] = {
        {1, {0}},        {1, {1}},          {1, {3}},           {2, {7, 13}},   {1, {127}},
        {4, {2, 3, 5, 7}}, {2, {255, 257}}, {1, {65537}},       {4, {1, 1, 1, 1}}, {2, {63, 65}},
        {0, {0}},        {2, {0, 5}},       {3, {129, 31, 2}},  {1, {1 << 20}}, {3, {4, 0, 3}},
        {2, {1, 4097}}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 6, "sum_all");
    for (; idx < nt; idx++) sum_all_case(c, idx, table[idx].ndim, table[idx].s);
    nt_rng draw = {c->base_seed + 113};
    for (; idx < 26; idx++) {
        shape_row row = draw_shape(&draw, 300000);
        sum_all_case(c, idx, row.ndim, row.s);
    }
    ops_end(c);

    ops_begin(c, 7, "sum_axis");
    idx = 0;
    for (int i = 0; i < nt; i++)
        for (int axis = 0; axis < table[i].ndim; axis++)
            if (ops_numel(table[i].ndim, table[i].s) <= 100000)
                sum_axis_case(c, idx++, table[i].ndim, table[i].s, axis);
    for (int end = idx + 12; idx < end; idx++) {
        shape_row row = draw_shape(&draw, 200000);
        sum_axis_case(c, idx, row.ndim, row.s, (int)nt_randint(&draw, 0, row.ndim - 1));
    }
    ops_end(c);
}

/* 10^7 uniform [0,1) values: the sum within 1e-6 of the float64 sum (a naive float32 loop
 * is off by ~1e-3 here). */
static void test_sum_large(ctx *c) {
    ops_begin(c, 8, "sum_all_1e7");
    int64_t n = 10000000;
    nt_rng r = ops_case_begin(c, 0, "x=[%lld] uniform [0,1)", (long long)n);
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, 1, &n, F_UNIT, &r) && ht_make(c, &Y, 1, (int64_t[]){1}, F_NAN, &r) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, neat_sum_all(cb, X.t, Y.t))) {
        float *got = ht_read(c, &Y, "y");
        double ref = 0;
        for (int64_t i = 0; i < n; i++) ref += X.v[i];
        EXPECT(c, fabs(got[0] - ref) <= 1e-6 * ref, "got %.9g want %.9g (rel %.3g)", got[0], ref,
               fabs(got[0] - ref) / ref);
        nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    ops_case_end(c);
    ops_end(c);
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
    nt_rng r = ops_case_begin(c, idx, "x=%s inplace=%d", ops_dims(ndim, shape).s, inplace);
    int64_t cols = shape[ndim - 1], rows = ops_numel(ndim - 1, shape);
    ht X = {0}, Y = {0};
    neat_cmdbuf *cb = NULL;
    if (ht_make(c, &X, ndim, shape, F_GIVEN, &r)) {
        fill_softmax(X.v, rows, cols, &r);
        ht_upload(c, &X);
    }
    if (X.t && (inplace || ht_make(c, &Y, ndim, shape, F_NAN, &r)) &&
        EXPECT_OK(c, neat_cmdbuf_create(c->dev, &cb), "neat_cmdbuf_create") &&
        ops_run(c, cb, neat_softmax(cb, X.t, inplace ? X.t : Y.t))) {
        ht out = inplace ? X : Y;
        float *got = ht_read(c, &out, "y");
        double *x = ops_to_double(X.v, X.n), *tol = ops_dnew(X.n);
        ref_softmax(x, x, rows, cols);
        for (int64_t i = 0; i < X.n; i++) tol[i] = 1e-5 * x[i] + 1e-30;
        ops_compare(c, "y", got, x, tol, 0, X.n, -1);
        if (!inplace) ht_unchanged(c, &X, "x");
        free(x), free(tol), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&Y);
    ops_case_end(c);
}

static void test_softmax(ctx *c) {
    static const shape_row table[] = {
        {2, {1, 1}},   {2, {0, 5}},     {2, {3, 0}},       {2, {1, 7}},     {2, {4, 13}},
        {2, {13, 31}}, {2, {7, 127}},   {2, {31, 129}},    {2, {4, 1000}},  {2, {2, 4097}},
        {3, {3, 5, 7}}, {4, {2, 3, 4, 255}}, {2, {64, 10}}, {1, {257}},      {2, {8, 63}},
        {2, {9, 65}}};
    int nt = (int)(sizeof table / sizeof table[0]), idx = 0;
    ops_begin(c, 9, "softmax");
    for (; idx < nt; idx++) softmax_case(c, idx, table[idx].ndim, table[idx].s, idx % 4 == 3);
    nt_rng draw = {c->base_seed + 127};
    for (; idx < 26; idx++) {
        shape_row row = draw_shape(&draw, 200000);
        softmax_case(c, idx, row.ndim, row.s, idx % 4 == 3);
    }
    ops_end(c);
}

/* The elementwise ops, one case each: op 0 activation (param = act), 1 add (param =
 * broadcast: 0 none, 1 b is [n], 2 b is [1,n]), 2 scale (alpha), 3 fill (value).
 * inplace: out is the first input. All exact except the smooth activations. */
enum { EW_ACT, EW_ADD, EW_SCALE, EW_FILL };

static void elementwise_case(ctx *c, int idx, int kind, int ndim, const int64_t *shape,
                             double param, int inplace) {
    nt_rng r = ops_case_begin(c, idx, "x=%s param=%g inplace=%d", ops_dims(ndim, shape).s, param,
                              inplace);
    int64_t cols = ndim ? shape[ndim - 1] : 1;
    int64_t n = ops_numel(ndim, shape), rows = cols ? n / cols : 0;
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
    if (ok && ops_run(c, cb, st)) {
        int in_out = inplace || kind == EW_FILL;
        float *got = ht_read(c, in_out ? &X : &Y, "out");
        double *x = ops_to_double(X.v, X.n), *tol = NULL;
        if (kind == EW_ACT) {
            neat_activation act = (neat_activation)param;
            if (ops_act_smooth(act)) {
                tol = ops_dnew(n);
                for (int64_t i = 0; i < n; i++)
                    tol[i] = 1e-5 * fabs(ref_act(act, x[i])) + 4 * EPS * (1 + fabs(x[i]));
            }
            ref_activation(act, x, x, n);
        } else if (kind == EW_ADD) {
            double *b = ops_to_double(B.v, B.n);
            ref_add(x, b, x, rows, cols, bcast);
            free(b);
        } else if (kind == EW_SCALE) {
            ref_scale(x, (float)param, x, n);
        } else {
            for (int64_t i = 0; i < n; i++) x[i] = (float)param;
        }
        ops_compare(c, "out", got, x, tol, 0, n, -1);
        if (!in_out) ht_unchanged(c, &X, "x");
        if (kind == EW_ADD) ht_unchanged(c, &B, "b");
        free(x), free(tol), nt_free(got);
    }
    neat_cmdbuf_destroy(cb);
    ht_free(&X), ht_free(&B), ht_free(&Y);
    ops_case_end(c);
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
        ops_begin(c, 10 + kind, names[kind]);
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
        ops_end(c);
    }
}

/* ---- driver -------------------------------------------------------------------------------- */

int main(void) {
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    /* the same default base as test_ops_layers.c */
    uint64_t base = nt_seed_base("ops_elementwise", 20240611);
    for (int d = 0; d < ndev; d++) {
        ctx c = {.dev = devs[d], .dev_name = names[d], .base_seed = base, .mode = MODE_STRICT};
        test_sums(&c);
        test_sum_large(&c);
        test_softmax(&c);
        test_elementwise(&c);

        c.mode = MODE_INT;
        test_sums(&c);
    }
    nt_close_devices(devs, ndev);
    return nt_finish("ops_elementwise");
}
