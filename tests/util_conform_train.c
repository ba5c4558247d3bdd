/*
 * util_conform_train.c — the backward op kinds of the conformance table: linear, conv2d,
 * maxpool2d, activation and softmax backward (the loss and the optimizers are in
 * util_conform_optim.c). Each kind's row parameters are listed above it.
 *
 * Tolerances: backward ops at 4x the forward's (DESIGN.md). For a matmul-shaped gradient,
 * |got - ref| <= 4 (2 K 2^-24 (|A||B|) + err) with the reference run once more on absolute
 * values (|A||B|) and once on the error bound of dz = dy act'(.) (err), and relative
 * Frobenius <= 4e-5; TF32 relative Frobenius <= 8e-3; integers bit-exact. Linear's db is a
 * sum of N terms: 4 ((log2 N + 1) 2^-24 sum|dz| + err), neatml.h's bound of sums, which tells
 * a tree-like order from a long sequential one (CUDA computes db in the dw GEMM's epilogue,
 * whose order cuBLASLt does not document). The saved forward output y an op reads is what a
 * float forward stores: the reference rounded to float.
 */
#include "reference.h"
#include "reference_train.h"
#include "util_conform.h"

#include <math.h>
#include <string.h>

#define EPS CF_EPS

static const char *act_name(int64_t a) {
    static const char *names[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    return names[a];
}

/* The activation of a row; the integer pass keeps only those exact on integers. */
static neat_activation row_act(const cf_case *c, int64_t act) {
    if (c->pass == CF_INT) return act == NEAT_ACT_RELU ? NEAT_ACT_RELU : NEAT_ACT_NONE;
    return (neat_activation)act;
}

static int reads_y(neat_activation act) {
    return act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH;
}

/* |error| bound of dz = dy act'(.) computed in float from y (or, for gelu, from a
 * pre-activation z recomputed in float with error zerr). gelu'' is bounded by 0.8. */
static double dz_error(neat_activation act, double dy, double z, double y, double zerr, double dz) {
    switch (act) {
    case NEAT_ACT_SIGMOID: return 4 * EPS * fabs(dz);
    case NEAT_ACT_TANH: return 4 * EPS * fabs(dz) + 2 * EPS * y * y * fabs(dy);
    case NEAT_ACT_GELU:
        return fabs(dy) * (zerr + 16 * EPS * (1 + fabs(z) + 0.14 * fabs(z * z * z)));
    default: return 0; /* relu and none: dz is dy or 0, exactly */
    }
}

static void absv(const double *v, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = fabs(v[i]);
}

/* ---- the gradients of linear and conv ---------------------------------------------------- */

/* Slots of a linear or conv backward case, -1 when absent. */
typedef struct grad_slots {
    int x, w, dy, b, y, dx, dw, db;
} grad_slots;

static grad_slots slots_of(int bias, int needs_y, int mask) {
    grad_slots s;
    int i = 0;
    s.x = i++, s.w = i++, s.dy = i++;
    s.b = bias ? i++ : -1;
    s.y = needs_y ? i++ : -1;
    s.dx = mask & 1 ? i++ : -1;
    s.dw = mask & 2 ? i++ : -1;
    s.db = mask & 4 ? i++ : -1;
    return s;
}

static void add_grad_tensors(cf_case *c, const grad_slots *s, int acc, int nd, const int64_t *shx,
                             const int64_t *shw, const int64_t *shb, const int64_t *shy) {
    int role = acc ? CF_INOUT : CF_OUT;
    cf_tensor_add(c, "x", CF_IN, CF_DATA, nd, shx);
    cf_tensor_add(c, "w", CF_IN, CF_DATA, nd, shw);
    cf_tensor_add(c, "dy", CF_IN, CF_DATA, nd, shy);
    if (s->b >= 0) cf_tensor_add(c, "b", CF_IN, CF_DATA, 1, shb);
    if (s->y >= 0) cf_tensor_add(c, "y", CF_IN, CF_GIVEN, nd, shy);
    if (s->dx >= 0) cf_tensor_add(c, "dx", role, CF_DATA, nd, shx);
    if (s->dw >= 0) cf_tensor_add(c, "dw", role, CF_DATA, nd, shw);
    if (s->db >= 0) cf_tensor_add(c, "db", role, CF_DATA, 1, shb);
}

/* Gradient output slot i (may be -1): ref starts as the previous contents (accumulate) and
 * is filled by the reference; abs and err receive the error-scale runs. */
typedef struct grad_arrays {
    double *ref, *abs, *err;
} grad_arrays;

static grad_arrays grad_begin(cf_case *c, int i, int acc) {
    grad_arrays g = {NULL, NULL, NULL};
    if (i < 0) return g;
    int64_t n = c->t[i].n;
    g.ref = cf_out(c, i, 0);
    if (acc)
        for (int64_t k = 0; k < n; k++) g.ref[k] = c->t[i].host[k];
    g.abs = cf_dnew(c, n), g.err = cf_dnew(c, n);
    return g;
}

/* The tolerance of a gradient whose strict bound is 4 (terms 2^-24 abs + err) (see the
 * file's comment); with accumulate the final addition to prev adds a rounding of
 * |prev| + |ref|. */
static void grad_tol_terms(cf_case *c, int i, const grad_arrays *g, double terms, int acc) {
    if (i < 0) return;
    cf_tensor *t = &c->t[i];
    if (c->pass == CF_INT) {
        t->tol = NULL;
        return;
    }
    if (c->pass == CF_TF32) {
        t->elem = 0;
        t->frob = 4 * 2e-3;
        return;
    }
    for (int64_t j = 0; j < t->n; j++) {
        t->tol[j] = 4.0 * (terms * EPS * g->abs[j] + g->err[j]) + 1e-37;
        if (acc) t->tol[j] += 4.0 * EPS * (fabs(t->host[j]) + fabs(g->ref[j]));
    }
    t->frob = 4e-5;
}

/* A matmul-shaped gradient with reduction length k: 2k terms. */
static void grad_tol(cf_case *c, int i, const grad_arrays *g, int64_t k, int acc) {
    grad_tol_terms(c, i, g, 2.0 * (double)k, acc);
}

/* A sum of k terms (linear's db): log2 k + 1. */
static void sum_tol(cf_case *c, int i, const grad_arrays *g, int64_t k, int acc) {
    grad_tol_terms(c, i, g, k > 1 ? log2((double)k) + 1 : 1, acc);
}

/* dz's magnitude and error bound, from the float y and the float32 error of z (zerr_k: the
 * forward's reduction length). */
static void dz_bounds(neat_activation act, const double *z, const double *zabs, const double *y,
                      const double *dy, int64_t n, int64_t zerr_k, double *dzabs, double *dzerr,
                      double *scratch) {
    ref_activation_backward(act, z, y, dy, scratch, n);
    for (int64_t i = 0; i < n; i++) {
        dzerr[i] =
            dz_error(act, dy[i], z[i], y[i], 2.0 * (double)zerr_k * EPS * zabs[i], scratch[i]);
        dzabs[i] = fabs(scratch[i]);
    }
}

/* ---- linear_backward: p = {n, in, out, act, bias, mask, acc, col}; mask: bit 0 dx, 1 dw,
 * 2 db. col = 1 (but in the integer pass): dy's column 0 is LIN_COL_BIG at rows r with
 * r % 1024 = 0 or 1023 and LIN_COL_SMALL elsewhere, a column whose sum in one long sequence
 * loses every small term after the first big one (each is under half an ulp of the running
 * sum): for N = 4096 an error of 2044 2^-24 against the bound 4 (12 + 1) 2^-24 8 = 416 2^-24,
 * where the sum kernel's order (64 terms in sequence, then a tree) errs by 124 2^-24 and a
 * pairwise sum by 12 (simulated in float32; 8 sequences of 512 interleaved: 444, just out).
 * The big values at both ends of each 1024 rows catch a forward or backward sequence
 * starting at any such boundary. With a bias, b[0] = 64 keeps column 0 of z positive, so
 * that relu passes the column unchanged into dz. ---- */

#define LIN_COL_BIG 1.0
#define LIN_COL_SMALL 0x1p-25

static grad_slots lin_slots(const cf_case *c) {
    const int64_t *p = c->row->p;
    return slots_of((int)p[4], reads_y(row_act(c, p[3])), (int)p[5]);
}

static void lin_bwd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    neat_activation act = row_act(c, p[3]);
    cf_describe(c, "n=%lld in=%lld out=%lld act=%s bias=%lld grads=%s%s%s acc=%lld%s",
                (long long)p[0], (long long)p[1], (long long)p[2], act_name(act), (long long)p[4],
                p[5] & 1 ? "x" : "", p[5] & 2 ? "w" : "", p[5] & 4 ? "b" : "", (long long)p[6],
                p[7] && c->pass != CF_INT ? " dy column 0 against sequential sums" : "");
    grad_slots s = lin_slots(c);
    add_grad_tensors(c, &s, (int)p[6], 2, (int64_t[]){p[0], p[1]}, (int64_t[]){p[2], p[1]},
                     (int64_t[]){p[2]}, (int64_t[]){p[0], p[2]});
}

/* y = the float forward of x, w, b (the reference rounded); z and zabs may be NULL. */
static double *lin_forward(cf_case *c, const grad_slots *s, double *z, double *zabs) {
    const int64_t *p = c->row->p;
    double *y = cf_dnew(c, p[0] * p[2]);
    ref_linear_forward(cf_in(c, s->x), cf_in(c, s->w), s->b >= 0 ? cf_in(c, s->b) : NULL,
                       row_act(c, p[3]), y, z, zabs, p[0], p[1], p[2]);
    for (int64_t i = 0; i < p[0] * p[2]; i++) y[i] = (float)y[i];
    return y;
}

static void lin_bwd_prepare(cf_case *c) {
    const int64_t *p = c->row->p;
    grad_slots s = lin_slots(c);
    if (p[7] && c->pass != CF_INT && p[2] > 0) {
        float *dy = c->t[s.dy].host;
        for (int64_t r = 0; r < p[0]; r++)
            dy[r * p[2]] = (float)(r % 1024 == 0 || r % 1024 == 1023 ? LIN_COL_BIG : LIN_COL_SMALL);
        if (s.b >= 0) c->t[s.b].host[0] = 64.0f;
    }
    if (s.y >= 0) cf_set(c, s.y, lin_forward(c, &s, NULL, NULL));
}

static neat_status lin_bwd_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    grad_slots s = lin_slots(c);
    return neat_linear_backward(cb, row_act(c, p[3]), cf_t(c, s.x), cf_t(c, s.w), cf_t(c, s.b),
                                cf_t(c, s.y), cf_t(c, s.dy), cf_t(c, s.dx), cf_t(c, s.dw),
                                cf_t(c, s.db), (int)p[6]);
}

static void lin_bwd_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    int64_t n = p[0], in = p[1], out = p[2], ny = n * out;
    int acc = (int)p[6];
    neat_activation act = row_act(c, p[3]);
    grad_slots s = lin_slots(c);
    double *z = cf_dnew(c, ny), *zabs = cf_dnew(c, ny), *y = lin_forward(c, &s, z, zabs);
    double *x = cf_in(c, s.x), *w = cf_in(c, s.w), *dy = cf_in(c, s.dy);
    double *b = s.b >= 0 ? cf_in(c, s.b) : NULL;
    grad_arrays gx = grad_begin(c, s.dx, acc), gw = grad_begin(c, s.dw, acc);
    grad_arrays gb = grad_begin(c, s.db, acc);
    ref_linear_backward(x, w, b, y, dy, act, n, in, out, gx.ref, gw.ref, gb.ref, acc);
    /* error bounds: the references run on |dz| and on dz's own error */
    double *xa = cf_dnew(c, n * in), *wa = cf_dnew(c, out * in);
    double *dzabs = cf_dnew(c, ny), *dzerr = cf_dnew(c, ny);
    absv(x, xa, n * in), absv(w, wa, out * in);
    dz_bounds(act, z, zabs, y, dy, ny, in, dzabs, dzerr, cf_dnew(c, ny));
    ref_linear_backward(xa, wa, NULL, NULL, dzabs, NEAT_ACT_NONE, n, in, out, gx.abs, gw.abs,
                        gb.abs, 0);
    ref_linear_backward(xa, wa, NULL, NULL, dzerr, NEAT_ACT_NONE, n, in, out, gx.err, gw.err,
                        gb.err, 0);
    grad_tol(c, s.dx, &gx, out, acc), grad_tol(c, s.dw, &gw, n, acc);
    sum_tol(c, s.db, &gb, n, acc);
}

const cf_kind cf_linear_backward_kind = {"linear_backward", CF_K_INT,       lin_bwd_build,
                                         lin_bwd_prepare,   lin_bwd_record, lin_bwd_reference};

/* ---- conv2d_backward: p = {n, c, h, w, k, kh, kw, sh, sw, ph, pw, dh, dw, groups, act,
 * bias, mask, acc}. ---- */

static grad_slots conv_slots(const cf_case *c) {
    const int64_t *p = c->row->p;
    return slots_of((int)p[15], reads_y(row_act(c, p[14])), (int)p[16]);
}

static ref_conv_shape conv_shape(const int64_t *p) {
    ref_conv_shape s = {p[0], p[1], p[2], p[3],  p[4],  p[5],  p[6],
                        p[7], p[8], p[9], p[10], p[11], p[12], p[13]};
    return s;
}

static neat_conv2d_desc conv_desc(const int64_t *p) {
    neat_conv2d_desc d =
        neat_conv2d_desc_full(p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13]);
    return d;
}

static void conv_bwd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    ref_conv_shape s = conv_shape(p);
    neat_activation act = row_act(c, p[14]);
    cf_describe(c,
                "x=%lldx%lldx%lldx%lld k=%lld kernel=%lldx%lld stride=%lldx%lld "
                "pad=%lldx%lld dil=%lldx%lld groups=%lld act=%s bias=%lld grads=%s%s%s acc=%lld",
                (long long)s.n, (long long)s.c, (long long)s.h, (long long)s.w, (long long)s.k,
                (long long)s.kh, (long long)s.kw, (long long)s.sh, (long long)s.sw, (long long)s.ph,
                (long long)s.pw, (long long)s.dh, (long long)s.dw, (long long)s.groups,
                act_name(act), (long long)p[15], p[16] & 1 ? "x" : "", p[16] & 2 ? "w" : "",
                p[16] & 4 ? "b" : "", (long long)p[17]);
    int64_t P = ref_conv_out(s.h, s.kh, s.sh, s.ph, s.dh),
            Q = ref_conv_out(s.w, s.kw, s.sw, s.pw, s.dw);
    grad_slots sl = conv_slots(c);
    add_grad_tensors(c, &sl, (int)p[17], 4, (int64_t[]){s.n, s.c, s.h, s.w},
                     (int64_t[]){s.k, s.c / s.groups, s.kh, s.kw}, (int64_t[]){s.k},
                     (int64_t[]){s.n, s.k, P, Q});
}

static double *conv_fwd(cf_case *c, const grad_slots *sl, double *z, double *zabs) {
    const int64_t *p = c->row->p;
    ref_conv_shape s = conv_shape(p);
    int64_t ny = c->t[sl->dy].n;
    double *y = cf_dnew(c, ny);
    ref_conv2d_forward(&s, cf_in(c, sl->x), cf_in(c, sl->w), sl->b >= 0 ? cf_in(c, sl->b) : NULL,
                       row_act(c, p[14]), y, z, zabs);
    for (int64_t i = 0; i < ny; i++) y[i] = (float)y[i];
    return y;
}

static void conv_bwd_prepare(cf_case *c) {
    grad_slots s = conv_slots(c);
    if (s.y >= 0) cf_set(c, s.y, conv_fwd(c, &s, NULL, NULL));
}

static neat_status conv_bwd_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    grad_slots s = conv_slots(c);
    neat_conv2d_desc d = conv_desc(p);
    d.layout = c->nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
    return neat_conv2d_backward(cb, &d, row_act(c, p[14]), cf_t(c, s.x), cf_t(c, s.w), cf_t(c, s.b),
                                cf_t(c, s.y), cf_t(c, s.dy), cf_t(c, s.dx), cf_t(c, s.dw),
                                cf_t(c, s.db), (int)p[17]);
}

static void conv_bwd_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    ref_conv_shape rs = conv_shape(p);
    neat_conv2d_desc d = conv_desc(p);
    neat_activation act = row_act(c, p[14]);
    int acc = (int)p[17];
    grad_slots s = conv_slots(c);
    int64_t ny = c->t[s.dy].n, nx = c->t[s.x].n, nw = c->t[s.w].n;
    int64_t P = c->t[s.dy].shape[2], Q = c->t[s.dy].shape[3];
    double *z = cf_dnew(c, ny), *zabs = cf_dnew(c, ny), *y = conv_fwd(c, &s, z, zabs);
    double *x = cf_in(c, s.x), *w = cf_in(c, s.w), *dy = cf_in(c, s.dy);
    double *b = s.b >= 0 ? cf_in(c, s.b) : NULL;
    grad_arrays gx = grad_begin(c, s.dx, acc), gw = grad_begin(c, s.dw, acc);
    grad_arrays gb = grad_begin(c, s.db, acc);
    ref_conv2d_backward(&d, rs.n, rs.c, rs.h, rs.w, rs.k, x, w, b, y, dy, act, gx.ref, gw.ref,
                        gb.ref, acc);
    double *xa = cf_dnew(c, nx), *wa = cf_dnew(c, nw);
    double *dzabs = cf_dnew(c, ny), *dzerr = cf_dnew(c, ny);
    absv(x, xa, nx), absv(w, wa, nw);
    int64_t cg = rs.c / rs.groups;
    dz_bounds(act, z, zabs, y, dy, ny, cg * rs.kh * rs.kw, dzabs, dzerr, cf_dnew(c, ny));
    ref_conv2d_backward(&d, rs.n, rs.c, rs.h, rs.w, rs.k, xa, wa, NULL, NULL, dzabs, NEAT_ACT_NONE,
                        gx.abs, gw.abs, gb.abs, 0);
    ref_conv2d_backward(&d, rs.n, rs.c, rs.h, rs.w, rs.k, xa, wa, NULL, NULL, dzerr, NEAT_ACT_NONE,
                        gx.err, gw.err, gb.err, 0);
    grad_tol(c, s.dx, &gx, (rs.k / rs.groups) * rs.kh * rs.kw, acc);
    grad_tol(c, s.dw, &gw, rs.n * P * Q, acc);
    grad_tol(c, s.db, &gb, rs.n * P * Q, acc);
}

const cf_kind cf_conv2d_backward_kind = {"conv2d_backward", CF_K_INT | CF_K_LAYOUT,
                                         conv_bwd_build,    conv_bwd_prepare,
                                         conv_bwd_record,   conv_bwd_reference};

/* ---- maxpool2d_backward: p = {n, c, h, w, kh, kw, sh, sw, ph, pw, ties}; ties: inputs in
 * {0, 1, 2}, so that the first-maximum rule is what the case tests. Slots: x, dy, dx.
 * Overlapping windows add at most ceil(kh/sh) ceil(kw/sw) terms: that many roundings of
 * the sum of |dy| (4x); without overlap exact. ---- */

static void pool_bwd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c,
                "x=%lldx%lldx%lldx%lld kernel=%lldx%lld stride=%lldx%lld pad=%lldx%lld ties=%lld",
                (long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3], (long long)p[4],
                (long long)p[5], (long long)p[6], (long long)p[7], (long long)p[8], (long long)p[9],
                (long long)p[10]);
    int64_t P = ref_train_pool_out_size(p[2], p[4], p[6], p[8]);
    int64_t Q = ref_train_pool_out_size(p[3], p[5], p[7], p[9]);
    cf_tensor_add(c, "x", CF_IN, p[10] ? CF_GIVEN : CF_DATA, 4, p);
    cf_tensor_add(c, "dy", CF_IN, CF_DATA, 4, (int64_t[]){p[0], p[1], P, Q});
    cf_tensor_add(c, "dx", CF_OUT, CF_DATA, 4, p);
}

static void pool_bwd_prepare(cf_case *c) {
    if (c->row->p[10])
        for (int64_t i = 0; i < c->t[0].n; i++) c->t[0].host[i] = (float)nt_randint(&c->rng, 0, 2);
}

static neat_status pool_bwd_record(cf_case *c, neat_cmdbuf *cb) {
    const int64_t *p = c->row->p;
    neat_pool2d_desc d = neat_pool2d_desc_full(p[4], p[5], p[6], p[7], p[8], p[9]);
    d.layout = c->nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
    return neat_maxpool2d_backward(cb, &d, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2));
}

static void pool_bwd_reference(cf_case *c) {
    const int64_t *p = c->row->p;
    neat_pool2d_desc d = neat_pool2d_desc_full(p[4], p[5], p[6], p[7], p[8], p[9]);
    double terms = (double)((p[4] + p[6] - 1) / p[6] * ((p[5] + p[7] - 1) / p[7]));
    double *x = cf_in(c, 0), *dy = cf_in(c, 1), *dya = cf_dnew(c, c->t[1].n);
    double *ref = cf_out(c, 2, terms <= 1);
    ref_maxpool2d_backward(&d, p[0], p[1], p[2], p[3], x, dy, ref);
    if (terms <= 1) return;
    absv(dy, dya, c->t[1].n);
    ref_maxpool2d_backward(&d, p[0], p[1], p[2], p[3], x, dya, c->t[2].tol);
    for (int64_t i = 0; i < c->t[2].n; i++) c->t[2].tol[i] *= 4 * terms * EPS;
    c->t[2].frob = 4e-5;
}

const cf_kind cf_maxpool2d_backward_kind = {"maxpool2d_backward", CF_K_LAYOUT,
                                            pool_bwd_build,       pool_bwd_prepare,
                                            pool_bwd_record,      pool_bwd_reference};

/* ---- activation_backward: p = {n, act, wide}. relu/sigmoid/tanh get only y = act(x)
 * (rounded), none and gelu only x; x uniform [-4,4), and with wide every other x one of
 * +-8, +-16, +-17, +-1e10, +-1e13, +-1e20, +-3e38 (gelu's x^2 and x^3 overflow float32 from
 * 1.8e19 and 7e12: the derivative must still come out 1 or 0, not NaN or -inf).
 * Slots: x or y, dy, dx. ---- */

static void act_bwd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "n=%lld act=%s%s", (long long)p[0], act_name(p[1]), p[2] ? " wide" : "");
    cf_tensor_add(c, reads_y((neat_activation)p[1]) ? "y" : "x", CF_IN, CF_GIVEN, 1, p);
    cf_tensor_add(c, "dy", CF_IN, CF_DATA, 1, p);
    cf_tensor_add(c, "dx", CF_OUT, CF_DATA, 1, p);
}

static void act_bwd_prepare(cf_case *c) {
    neat_activation act = (neat_activation)c->row->p[1];
    cf_fill_uniform(c, 0, -4, 4);
    if (c->row->p[2]) {
        static const float wide[] = {8, 16, 17, 1e10f, 1e13f, 1e20f, 3e38f};
        float *x = c->t[0].host;
        for (int64_t i = 0; 2 * i < c->t[0].n; i++)
            x[2 * i] = wide[i % 7] * (i / 7 % 2 ? -1.0f : 1.0f);
    }
    if (reads_y(act)) {
        double *v = cf_in(c, 0);
        ref_activation(act, v, v, c->t[0].n);
        cf_set(c, 0, v);
    }
}

static neat_status act_bwd_record(cf_case *c, neat_cmdbuf *cb) {
    neat_activation act = (neat_activation)c->row->p[1];
    int y = reads_y(act);
    return neat_activation_backward(cb, act, cf_t(c, y ? -1 : 0), cf_t(c, y ? 0 : -1), cf_t(c, 1),
                                    cf_t(c, 2));
}

static void act_bwd_reference(cf_case *c) {
    neat_activation act = (neat_activation)c->row->p[1];
    int64_t n = c->t[0].n;
    double *v = cf_in(c, 0), *dy = cf_in(c, 1), *ref = cf_out(c, 2, 0);
    /* x or y, as the op reads it: the reference takes the one it needs */
    ref_activation_backward(act, v, v, dy, ref, n);
    for (int64_t i = 0; i < n; i++)
        c->t[2].tol[i] = 4 * (4 * EPS * fabs(ref[i]) + dz_error(act, dy[i], v[i], v[i], 0, ref[i]));
    c->t[2].frob = 4e-5;
}

const cf_kind cf_activation_backward_kind = {
    "activation_backward", 0, act_bwd_build, act_bwd_prepare, act_bwd_record, act_bwd_reference};

/* ---- softmax_backward: p = {rows, cols}; y = softmax of uniform [-5,5) rows (rounded).
 * dx = y (dy - sum(dy y)): 4 (1e-5 |ref| + the rounding of the dot). Slots: y, dy, dx. */

static void sm_bwd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "x=[%lld,%lld]", (long long)p[0], (long long)p[1]);
    cf_tensor_add(c, "y", CF_IN, CF_GIVEN, 2, p);
    cf_tensor_add(c, "dy", CF_IN, CF_DATA, 2, p);
    cf_tensor_add(c, "dx", CF_OUT, CF_DATA, 2, p);
}

static void sm_bwd_prepare(cf_case *c) {
    cf_fill_uniform(c, 0, -5, 5);
    double *v = cf_in(c, 0);
    ref_softmax(v, v, c->row->p[0], c->row->p[1]);
    cf_set(c, 0, v);
}

static neat_status sm_bwd_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_softmax_backward(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2));
}

static void sm_bwd_reference(cf_case *c) {
    int64_t rows = c->row->p[0], cols = c->row->p[1];
    double *y = cf_in(c, 0), *dy = cf_in(c, 1), *ref = cf_out(c, 2, 0), *tol = c->t[2].tol;
    ref_softmax_backward(rows, cols, y, dy, ref);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t j = 0; j < cols; j++) s += fabs(dy[r * cols + j] * y[r * cols + j]);
        for (int64_t j = 0; j < cols; j++) {
            int64_t i = r * cols + j;
            tol[i] = 4 * (1e-5 * fabs(ref[i]) + y[i] * (double)cols * EPS * s +
                          2 * EPS * y[i] * fabs(dy[i])) +
                     1e-37;
        }
    }
    c->t[2].frob = 4e-5;
}

const cf_kind cf_softmax_backward_kind = {
    "softmax_backward", 0, sm_bwd_build, sm_bwd_prepare, sm_bwd_record, sm_bwd_reference};
