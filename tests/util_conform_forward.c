/*
 * util_conform_forward.c — the forward op kinds of the conformance table: matmul,
 * matmul_batched, linear_forward, conv2d_forward, maxpool2d, sum_all, sum_axis, softmax,
 * activation_forward, add, scale, fill. Each kind's row parameters are listed above it.
 *
 * Tolerances (DESIGN.md): elementwise and maxpool exact (smooth activations 1e-5 |y| +
 * 4 2^-24 (1+|x|)); matmul/linear/conv cf_gemm_tol; softmax 1e-5 ref; sums
 * (log2 n + 1) 2^-24 sum|x|, bit-exact on integers.
 */
#include "reference.h"
#include "util_conform.h"

#include <math.h>
#include <string.h>

/* "[2,3,5]", "[]" for a scalar. */
typedef struct dims_str {
    char s[80];
} dims_str;
static dims_str dims(int ndim, const int64_t *shape) {
    dims_str d = {"["};
    for (int i = 0; i < ndim; i++)
        snprintf(d.s + strlen(d.s), sizeof d.s - strlen(d.s), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
    strcat(d.s, "]");
    return d;
}

static int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* The activation of a row; the integer pass keeps only those exact on integers. */
static neat_activation row_act(const cf_case *c, int64_t act) {
    if (c->pass == CF_INT) return act == NEAT_ACT_RELU ? NEAT_ACT_RELU : NEAT_ACT_NONE;
    return (neat_activation)act;
}

/* ---- matmul, matmul_batched: p = {m, n, k, trans_a, trans_b, batch}, f = {alpha, beta};
 * batch 0 is neat_matmul on 2-D tensors. Slots: a, b, c (read too when beta != 0). ---- */

static void alpha_beta(const cf_case *c, float *alpha, float *beta) {
    static const float ints[][2] = {{1, 0}, {1, 1}, {2, -1}, {-1, 3}};
    *alpha = c->pass == CF_INT ? ints[c->idx % 4][0] : (float)c->row->f[0];
    *beta = c->pass == CF_INT ? ints[c->idx % 4][1] : (float)c->row->f[1];
}

static void matmul_build(cf_case *c) {
    const int64_t *p = c->row->p;
    int64_t m = p[0], n = p[1], k = p[2], ta = p[3], tb = p[4], batch = p[5];
    float alpha, beta;
    alpha_beta(c, &alpha, &beta);
    cf_describe(c, "batch=%lld m=%lld n=%lld k=%lld ta=%lld tb=%lld alpha=%g beta=%g",
                (long long)batch, (long long)m, (long long)n, (long long)k, (long long)ta,
                (long long)tb, alpha, beta);
    int nd = batch ? 3 : 2, o = batch ? 1 : 0;
    int64_t as[3] = {batch}, bs[3] = {batch}, cs[3] = {batch};
    as[o] = ta ? k : m, as[o + 1] = ta ? m : k;
    bs[o] = tb ? n : k, bs[o + 1] = tb ? k : n;
    cs[o] = m, cs[o + 1] = n;
    cf_tensor_add(c, "a", CF_IN, CF_DATA, nd, as);
    cf_tensor_add(c, "b", CF_IN, CF_DATA, nd, bs);
    cf_tensor_add(c, "c", beta != 0 ? CF_INOUT : CF_OUT, CF_DATA, nd, cs);
}

static neat_status matmul_record(cf_case *c, neat_cmdbuf *cb) {
    float alpha, beta;
    alpha_beta(c, &alpha, &beta);
    int ta = (int)c->row->p[3], tb = (int)c->row->p[4];
    return c->row->p[5]
               ? neat_matmul_batched(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2), alpha, beta, ta, tb)
               : neat_matmul(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2), alpha, beta, ta, tb);
}

static void matmul_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    float alpha, beta;
    alpha_beta(c, &alpha, &beta);
    double *a = cf_in(c, 0), *b = cf_in(c, 1), *c0 = cf_in(c, 2);
    double *ref = cf_out(c, 2, 0), *abs = cf_dnew(c, c->t[2].n);
    memcpy(ref, c0, sizeof(double) * (size_t)c->t[2].n); /* NaN when beta == 0: not read */
    ref_matmul_batched(a, b, ref, abs, p[5] ? p[5] : 1, p[0], p[1], p[2], alpha, beta, (int)p[3],
                       (int)p[4]);
    cf_gemm_tol(c, 2, ref, abs, p[2], NEAT_ACT_NONE);
}

static const cf_kind matmul_kind = {"matmul", CF_K_INT,      matmul_build,
                                    NULL,     matmul_record, matmul_reference};
static const cf_kind matmul_batched_kind = {"matmul_batched", CF_K_INT,        matmul_build, NULL,
                                            matmul_record,    matmul_reference};

/* ---- linear_forward: p = {n, in, out, bias, act}. Slots: x, w, y, b (when bias). ---- */

static void linear_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "n=%lld in=%lld out=%lld bias=%lld act=%d", (long long)p[0], (long long)p[1],
                (long long)p[2], (long long)p[3], (int)row_act(c, p[4]));
    cf_tensor_add(c, "x", CF_IN, CF_DATA, 2, (int64_t[]){p[0], p[1]});
    cf_tensor_add(c, "w", CF_IN, CF_DATA, 2, (int64_t[]){p[2], p[1]});
    cf_tensor_add(c, "y", CF_OUT, CF_DATA, 2, (int64_t[]){p[0], p[2]});
    if (p[3]) cf_tensor_add(c, "b", CF_IN, CF_DATA, 1, (int64_t[]){p[2]});
}

static neat_status linear_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_linear_forward(cb, row_act(c, c->row->p[4]), cf_t(c, 0), cf_t(c, 1),
                               cf_t(c, c->row->p[3] ? 3 : -1), cf_t(c, 2));
}

static void linear_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    neat_activation act = row_act(c, p[4]);
    double *x = cf_in(c, 0), *w = cf_in(c, 1), *b = p[3] ? cf_in(c, 3) : NULL;
    double *y = cf_out(c, 2, 0), *z = cf_dnew(c, c->t[2].n), *abs = cf_dnew(c, c->t[2].n);
    ref_linear_forward(x, w, b, act, y, z, abs, p[0], p[1], p[2]);
    cf_gemm_tol(c, 2, z, abs, p[1] + 1, act);
}

static const cf_kind linear_kind = {"linear_forward", CF_K_INT,        linear_build, NULL,
                                    linear_record,    linear_reference};

/* ---- conv2d_forward: p = {n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias,
 * act}. Slots: x, w, y, b (when bias). ---- */

static ref_conv_shape conv_shape(const int64_t *p) {
    ref_conv_shape s = {p[0], p[1], p[2], p[3],  p[4],  p[5],  p[6],
                        p[7], p[8], p[9], p[10], p[11], p[12], p[13]};
    return s;
}

static void conv_build(cf_case *c) {
    const int64_t *p = c->row->p;
    ref_conv_shape s = conv_shape(p);
    cf_describe(c,
                "x=%lldx%lldx%lldx%lld k=%lld kernel=%lldx%lld stride=%lldx%lld "
                "pad=%lldx%lld dil=%lldx%lld groups=%lld bias=%lld act=%d",
                (long long)s.n, (long long)s.c, (long long)s.h, (long long)s.w, (long long)s.k,
                (long long)s.kh, (long long)s.kw, (long long)s.sh, (long long)s.sw, (long long)s.ph,
                (long long)s.pw, (long long)s.dh, (long long)s.dw, (long long)s.groups,
                (long long)p[14], (int)row_act(c, p[15]));
    int64_t op = ref_conv_out(s.h, s.kh, s.sh, s.ph, s.dh),
            oq = ref_conv_out(s.w, s.kw, s.sw, s.pw, s.dw);
    cf_tensor_add(c, "x", CF_IN, CF_DATA, 4, (int64_t[]){s.n, s.c, s.h, s.w});
    cf_tensor_add(c, "w", CF_IN, CF_DATA, 4, (int64_t[]){s.k, s.c / s.groups, s.kh, s.kw});
    cf_tensor_add(c, "y", CF_OUT, CF_DATA, 4, (int64_t[]){s.n, s.k, op, oq});
    if (p[14]) cf_tensor_add(c, "b", CF_IN, CF_DATA, 1, (int64_t[]){s.k});
}

static neat_status conv_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    neat_conv2d_desc d = {
        p[5],  p[6],  p[7],  p[8],  p[9],
        p[10], p[11], p[12], p[13], c->nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW};
    return neat_conv2d_forward(cb, &d, row_act(c, p[15]), cf_t(c, 0), cf_t(c, 1),
                               cf_t(c, p[14] ? 3 : -1), cf_t(c, 2));
}

static void conv_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    ref_conv_shape s = conv_shape(p);
    neat_activation act = row_act(c, p[15]);
    double *x = cf_in(c, 0), *w = cf_in(c, 1), *b = p[14] ? cf_in(c, 3) : NULL;
    double *y = cf_out(c, 2, 0), *z = cf_dnew(c, c->t[2].n), *abs = cf_dnew(c, c->t[2].n);
    ref_conv2d_forward(&s, x, w, b, act, y, z, abs);
    cf_gemm_tol(c, 2, z, abs, s.c / s.groups * s.kh * s.kw + 1, act);
}

static const cf_kind conv_kind = {"conv2d_forward", CF_K_INT | CF_K_LAYOUT, conv_build, NULL,
                                  conv_record,      conv_reference};

/* ---- maxpool2d: p = {n, c, h, w, kh, kw, sh, sw, ph, pw, neg}; neg: all inputs in
 * [-3,-1) (padding counted as 0 instead of -inf would show). Slots: x, y. Exact. ---- */

static ref_conv_shape pool_shape(const int64_t *p) {
    ref_conv_shape s = {p[0], p[1], p[2], p[3], p[1], p[4], p[5], p[6], p[7], p[8], p[9], 1, 1, 1};
    return s;
}

static void maxpool_build(cf_case *c) {
    const int64_t *p = c->row->p;
    ref_conv_shape s = pool_shape(p);
    cf_describe(c, "x=%lldx%lldx%lldx%lld kernel=%lldx%lld stride=%lldx%lld pad=%lldx%lld neg=%lld",
                (long long)s.n, (long long)s.c, (long long)s.h, (long long)s.w, (long long)s.kh,
                (long long)s.kw, (long long)s.sh, (long long)s.sw, (long long)s.ph, (long long)s.pw,
                (long long)p[10]);
    cf_tensor_add(c, "x", CF_IN, p[10] ? CF_NEG : CF_DATA, 4, (int64_t[]){s.n, s.c, s.h, s.w});
    cf_tensor_add(c, "y", CF_OUT, CF_DATA, 4,
                  (int64_t[]){s.n, s.c, ref_conv_out(s.h, s.kh, s.sh, s.ph, 1),
                              ref_conv_out(s.w, s.kw, s.sw, s.pw, 1)});
}

static neat_status maxpool_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    neat_pool2d_desc d = {
        p[4], p[5], p[6], p[7], p[8], p[9], c->nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW};
    return neat_maxpool2d(cb, &d, cf_t(c, 0), cf_t(c, 1));
}

static void maxpool_reference(cf_case *c) {
    ref_conv_shape s = pool_shape(c->row->p);
    ref_maxpool2d(&s, cf_in(c, 0), cf_out(c, 1, 1));
}

static const cf_kind maxpool_kind = {"maxpool2d", CF_K_LAYOUT,    maxpool_build,
                                     NULL,        maxpool_record, maxpool_reference};

/* ---- sum_all: p = {ndim, s0, s1, s2, s3, ydim, unit}, f = {rel}: y of ydim dimensions
 * (0, 1 or 2, one element); unit: inputs uniform [0,1); rel > 0 tightens the bound to
 * rel |sum| where that is smaller (a naive float loop fails 1e-6 on 10^7 values).
 * Slots: x, y. ---- */

/* Sum of n terms: error <= (log2 n + 1) 2^-24 sum|x| (the documented pairwise bound). */
static double sum_tol(int64_t n, double abs) {
    return (log2((double)(n > 1 ? n : 1)) + 1) * CF_EPS * abs;
}

static void sum_all_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "x=%s y=%s%s", dims((int)p[0], p + 1).s, dims((int)p[5], (int64_t[]){1, 1}).s,
                p[6] ? " uniform [0,1)" : "");
    cf_tensor_add(c, "x", CF_IN, p[6] ? CF_UNIT : CF_DATA, (int)p[0], p + 1);
    cf_tensor_add(c, "y", CF_OUT, CF_DATA, (int)p[5], (int64_t[]){1, 1});
}

static neat_status sum_all_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_sum_all(cb, cf_t(c, 0), cf_t(c, 1));
}

static void sum_all_reference(cf_case *c) {
    /* Exact in the integer pass, unless the row asks for [0,1) values (then not integers). */
    double abs, *y = cf_out(c, 1, c->pass == CF_INT && !c->row->p[6]);
    y[0] = ref_sum_all(cf_in(c, 0), c->t[0].n, &abs);
    if (c->t[1].tol) {
        c->t[1].tol[0] = sum_tol(c->t[0].n, abs);
        if (c->row->f[0] > 0 && c->row->f[0] * fabs(y[0]) < c->t[1].tol[0])
            c->t[1].tol[0] = c->row->f[0] * fabs(y[0]);
    }
}

static const cf_kind sum_all_kind = {"sum_all", CF_K_INT,       sum_all_build,
                                     NULL,      sum_all_record, sum_all_reference};

/* ---- sum_axis: p = {ndim, s0, s1, s2, s3, axis, keepdim}. Slots: x, y. ---- */

static void sum_axis_build(cf_case *c) {
    const int64_t *p = c->row->p, *shape = p + 1;
    int ndim = (int)p[0], axis = (int)p[5], yd = 0;
    int64_t ys[4];
    for (int i = 0; i < ndim; i++)
        if (i != axis)
            ys[yd++] = shape[i];
        else if (p[6])
            ys[yd++] = 1;
    if (yd == 0) ys[yd++] = 1; /* a 1-D x sums into [1] */
    cf_describe(c, "x=%s axis=%d keepdim=%lld", dims(ndim, shape).s, axis, (long long)p[6]);
    cf_tensor_add(c, "x", CF_IN, CF_DATA, ndim, shape);
    cf_tensor_add(c, "y", CF_OUT, CF_DATA, yd, ys);
}

static neat_status sum_axis_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_sum_axis(cb, cf_t(c, 0), (int)c->row->p[5], cf_t(c, 1));
}

static void sum_axis_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    int axis = (int)p[5];
    int64_t outer = numel(axis, p + 1), len = p[1 + axis];
    int64_t inner = numel((int)p[0] - axis - 1, p + 2 + axis);
    double *y = cf_out(c, 1, c->pass == CF_INT), *abs = cf_dnew(c, c->t[1].n);
    ref_sum_axis(cf_in(c, 0), y, abs, outer, len, inner);
    if (c->t[1].tol)
        for (int64_t i = 0; i < c->t[1].n; i++) c->t[1].tol[i] = sum_tol(len, abs[i]);
}

static const cf_kind sum_axis_kind = {"sum_axis", CF_K_INT,        sum_axis_build,
                                      NULL,       sum_axis_record, sum_axis_reference};

/* ---- softmax: p = {ndim, s0, s1, s2, s3, inplace}. Rows cycle through ordinary [-8,8);
 * all above 88.7 (exp overflows float32 without the max subtraction); all near -1000 (exp
 * underflows to 0 without it); a spread of -1000..100. Slots: x (and y unless in place). */

static void softmax_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "x=%s inplace=%lld", dims((int)p[0], p + 1).s, (long long)p[5]);
    cf_tensor_add(c, "x", p[5] ? CF_INOUT : CF_IN, CF_GIVEN, (int)p[0], p + 1);
    if (!p[5]) cf_tensor_add(c, "y", CF_OUT, CF_DATA, (int)p[0], p + 1);
}

static void softmax_prepare(cf_case *c) {
    static const double lo[] = {-8, 88.7, -1005, -1000}, hi[] = {8, 120, -995, 100};
    int64_t cols = c->row->p[c->row->p[0]], rows = cols ? c->t[0].n / cols : 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            c->t[0].host[i * cols + j] = (float)nt_uniform(&c->rng, lo[i % 4], hi[i % 4]);
}

static neat_status softmax_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_softmax(cb, cf_t(c, 0), cf_t(c, c->row->p[5] ? 0 : 1));
}

static void softmax_reference(cf_case *c) {
    int o = c->row->p[5] ? 0 : 1;
    int64_t cols = c->row->p[c->row->p[0]], n = c->t[0].n, rows = cols ? n / cols : 0;
    double *y = cf_out(c, o, 0);
    ref_softmax(cf_in(c, 0), y, rows, cols);
    for (int64_t i = 0; i < n; i++) c->t[o].tol[i] = 1e-5 * y[i] + 1e-30;
}

static const cf_kind softmax_kind = {
    "softmax", 0, softmax_build, softmax_prepare, softmax_record, softmax_reference};

/* ---- activation_forward, add, mul, scale, fill: p = {ndim, s0, s1, s2, s3, param, inplace},
 * f = {value}. param: the activation (activation_forward) or the broadcast of add/mul (0 none,
 * 1 b is [n], 2 b is [1,n]); f[0]: alpha of scale, the value of fill. Inputs uniform
 * [-8,8). Slots: x (in place: the output), b (add), y (unless in place; fill writes x). */

static void ew_build(cf_case *c) {
    const int64_t *p = c->row->p;
    int kind = c->row->kind, inplace = (int)p[6] || kind == CF_FILL;
    int64_t cols = p[0] ? p[p[0]] : 1;
    cf_describe(c, "x=%s param=%lld value=%g inplace=%d", dims((int)p[0], p + 1).s, (long long)p[5],
                c->row->f[0], inplace);
    cf_tensor_add(c, "x",
                  kind == CF_FILL ? CF_OUT
                  : inplace       ? CF_INOUT
                                  : CF_IN,
                  CF_WIDE, (int)p[0], p + 1);
    if (kind == CF_ADD || kind == CF_MUL) {
        if (p[5] == 1)
            cf_tensor_add(c, "b", CF_IN, CF_WIDE, 1, &cols);
        else if (p[5] == 2)
            cf_tensor_add(c, "b", CF_IN, CF_WIDE, 2, (int64_t[]){1, cols});
        else
            cf_tensor_add(c, "b", CF_IN, CF_WIDE, (int)p[0], p + 1);
    }
    if (!inplace) cf_tensor_add(c, "y", CF_OUT, CF_DATA, (int)p[0], p + 1);
}

static neat_status ew_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    neat_tensor *x = cf_t(c, 0), *out = p[6] ? x : cf_t(c, c->nt - 1);
    switch (c->row->kind) {
    case CF_ACTIVATION_FORWARD: return neat_activation_forward(cb, (neat_activation)p[5], x, out);
    case CF_ADD: return neat_add(cb, x, cf_t(c, 1), out);
    case CF_MUL: return neat_mul(cb, x, cf_t(c, 1), out);
    case CF_SCALE: return neat_scale(cb, x, (float)c->row->f[0], out);
    default: return neat_fill(cb, x, (float)c->row->f[0]);
    }
}

static void ew_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    int kind = c->row->kind, o = c->nt - 1; /* the output: the last slot, or x in place */
    if (p[6] || kind == CF_FILL) o = 0;
    int64_t n = c->t[0].n, cols = p[0] ? p[p[0]] : 1, rows = cols ? n / cols : 0;
    neat_activation act = (neat_activation)p[5];
    int smooth = kind == CF_ACTIVATION_FORWARD && cf_act_smooth(act);
    double *x = cf_in(c, 0), *y = cf_out(c, o, !smooth);
    switch (kind) {
    case CF_ACTIVATION_FORWARD:
        ref_activation(act, x, y, n);
        for (int64_t i = 0; smooth && i < n; i++)
            c->t[o].tol[i] = 1e-5 * fabs(y[i]) + 4 * CF_EPS * (1 + fabs(x[i]));
        break;
    case CF_ADD: ref_add(x, cf_in(c, 1), y, rows, cols, (int)p[5]); break;
    case CF_MUL: ref_mul(x, cf_in(c, 1), y, rows, cols, (int)p[5]); break;
    case CF_SCALE: ref_scale(x, (float)c->row->f[0], y, n); break;
    default:
        for (int64_t i = 0; i < n; i++) y[i] = (float)c->row->f[0];
    }
}

static const cf_kind act_kind = {"activation_forward", 0, ew_build, NULL, ew_record, ew_reference};
static const cf_kind add_kind = {"add", 0, ew_build, NULL, ew_record, ew_reference};
static const cf_kind mul_kind = {"mul", 0, ew_build, NULL, ew_record, ew_reference};
static const cf_kind scale_kind = {"scale", 0, ew_build, NULL, ew_record, ew_reference};
static const cf_kind fill_kind = {"fill", 0, ew_build, NULL, ew_record, ew_reference};

/* The training kinds: util_conform_train.c, util_conform_optim.c and util_conform_amp.c. */
extern const cf_kind cf_linear_backward_kind, cf_conv2d_backward_kind, cf_maxpool2d_backward_kind,
    cf_activation_backward_kind, cf_softmax_backward_kind, cf_softmax_xent_kind,
    cf_softmax_xent_backward_kind, cf_sgd_update_kind, cf_adam_update_kind, cf_loss_scale_kind,
    cf_loss_scale_check_kind, cf_loss_scale_update_kind;

const cf_kind *const cf_kinds[CF_NKINDS] = {
    [CF_MATMUL] = &matmul_kind,
    [CF_MATMUL_BATCHED] = &matmul_batched_kind,
    [CF_LINEAR_FORWARD] = &linear_kind,
    [CF_CONV2D_FORWARD] = &conv_kind,
    [CF_MAXPOOL2D] = &maxpool_kind,
    [CF_SUM_ALL] = &sum_all_kind,
    [CF_SUM_AXIS] = &sum_axis_kind,
    [CF_SOFTMAX] = &softmax_kind,
    [CF_ACTIVATION_FORWARD] = &act_kind,
    [CF_ADD] = &add_kind,
    [CF_MUL] = &mul_kind,
    [CF_SCALE] = &scale_kind,
    [CF_FILL] = &fill_kind,
    [CF_LINEAR_BACKWARD] = &cf_linear_backward_kind,
    [CF_CONV2D_BACKWARD] = &cf_conv2d_backward_kind,
    [CF_MAXPOOL2D_BACKWARD] = &cf_maxpool2d_backward_kind,
    [CF_ACTIVATION_BACKWARD] = &cf_activation_backward_kind,
    [CF_SOFTMAX_BACKWARD] = &cf_softmax_backward_kind,
    [CF_SOFTMAX_XENT] = &cf_softmax_xent_kind,
    [CF_SOFTMAX_XENT_BACKWARD] = &cf_softmax_xent_backward_kind,
    [CF_SGD_UPDATE] = &cf_sgd_update_kind,
    [CF_ADAM_UPDATE] = &cf_adam_update_kind,
    [CF_LOSS_SCALE] = &cf_loss_scale_kind,
    [CF_LOSS_SCALE_CHECK] = &cf_loss_scale_check_kind,
    [CF_LOSS_SCALE_UPDATE] = &cf_loss_scale_update_kind,
};
