/*
 * util_conform_optim.c — the op kinds of the conformance table that end a training step:
 * softmax cross-entropy forward and backward, SGD and Adam. Each kind's row parameters are
 * listed above it.
 *
 * Tolerances: the loss and dlogits 4x the softmax rule plus the roundings of the
 * log-sum-exp and the mean. The optimizers take one step from random state, bounded by a
 * running estimate of float32 rounding (4x); the 1000-step replays with a schedule stay in
 * test_optim.c.
 */
#include "reference_train.h"
#include "util_conform.h"

#include <math.h>
#include <string.h>

#define EPS CF_EPS

/* ---- softmax_xent, softmax_xent_backward: p = {rows, cols, big}; logits uniform [-8,8);
 * big 1: each row some -1000 and one +1000, the label on either; big 2: logits far beyond
 * 2^53 (some +-1e30, at times one -3e37, the rest uniform scaled by 1e27), the label on a
 * 1e30, the largest: the loss is the mean log(count of maxima), which a sum m + log s in
 * float or double loses. Slots: logits, labels, loss [1] (forward) or dlogits. ---- */

static void xent_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "logits=[%lld,%lld]%s", (long long)p[0], (long long)p[1],
                p[2] == 1   ? " +-1000"
                : p[2] == 2 ? " +-1e30"
                            : "");
    cf_tensor_add(c, "logits", CF_IN, CF_GIVEN, 2, p);
    cf_tensor_add(c, "labels", CF_IN, CF_GIVEN, 1, p);
    if (c->row->kind == CF_SOFTMAX_XENT)
        cf_tensor_add(c, "loss", CF_OUT, CF_DATA, 1, (int64_t[]){1});
    else
        cf_tensor_add(c, "dlogits", CF_OUT, CF_DATA, 2, p);
}

static void xent_prepare(cf_case *c) {
    int64_t rows = c->row->p[0], cols = c->row->p[1];
    float *x = c->t[0].host, *lab = c->t[1].host;
    cf_fill_uniform(c, 0, -8, 8);
    for (int64_t r = 0; r < rows; r++) {
        lab[r] = (float)nt_randint(&c->rng, 0, cols - 1);
        if (c->row->p[2] == 1) {
            for (int64_t j = 0; j < cols; j++)
                if (nt_randint(&c->rng, 0, 1)) x[r * cols + j] = -1000;
            x[r * cols + nt_randint(&c->rng, 0, cols - 1)] = 1000;
        } else if (c->row->p[2] == 2) {
            for (int64_t j = 0; j < cols; j++) {
                int pick = (int)nt_randint(&c->rng, 0, 3);
                x[r * cols + j] = pick == 0 ? 1e30f : pick == 1 ? -1e30f : x[r * cols + j] * 1e27f;
            }
            if (nt_randint(&c->rng, 0, 3) == 0)
                x[r * cols + nt_randint(&c->rng, 0, cols - 1)] = -3e37f;
            x[r * cols + (int64_t)lab[r]] = 1e30f; /* a maximum: nothing is above 1e30 */
        }
    }
}

static neat_status xent_record(cf_case *c, neat_cmdbuf *cb) {
    if (c->row->kind == CF_SOFTMAX_XENT)
        return neat_softmax_cross_entropy(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2));
    return neat_softmax_cross_entropy_backward(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2));
}

/* loss: per row, log s rounds about (cols + 4) eps, then two roundings of size
 * |m - x_label| + log s (m - x_label and the sum; not |m|: log s must survive a large m);
 * the mean adds rows roundings (4x). dlogits: softmax rtol 1e-5 (4x). */
static void xent_reference(cf_case *c) {
    int64_t rows = c->row->p[0], cols = c->row->p[1];
    double *x = cf_in(c, 0), *lab = cf_in(c, 1);
    if (c->row->kind == CF_SOFTMAX_XENT) {
        double *loss = cf_out(c, 2, 0), tol = 0;
        loss[0] = ref_softmax_xent(rows, cols, x, lab);
        for (int64_t r = 0; r < rows; r++) {
            double m = -INFINITY, xl = x[r * cols + (int64_t)lab[r]];
            for (int64_t j = 0; j < cols; j++) m = fmax(m, x[r * cols + j]);
            double mag = (m - xl) + log((double)cols) + 1; /* bounds the row's loss */
            tol += (double)(cols + 4) * EPS + (2 + (double)rows) * EPS * mag;
        }
        c->t[2].tol[0] = rows ? 4 * tol / (double)rows : 0;
        return;
    }
    double *ref = cf_out(c, 2, 0);
    ref_softmax_xent_backward(rows, cols, x, lab, ref);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++) {
            int64_t i = r * cols + j;
            double p = ref[i] * (double)rows + (j == (int64_t)lab[r]);
            c->t[2].tol[i] = 4 * (1e-5 * p / (double)rows + 2 * EPS * fabs(ref[i])) + 1e-37;
        }
    c->t[2].frob = 4e-5;
}

const cf_kind cf_softmax_xent_kind = {"softmax_xent", 0,           xent_build,
                                      xent_prepare,   xent_record, xent_reference};
const cf_kind cf_softmax_xent_backward_kind = {
    "softmax_xent_backward", 0, xent_build, xent_prepare, xent_record, xent_reference};

/* ---- sgd_update: p = {n, mixed, grad dtype, param dtype, scaler}, f = {lr, momentum,
 * weight_decay, nesterov}. adam_update: the same p, f = {lr, beta1, beta2, eps,
 * weight_decay}, step t = 1 on the first commit and 1000 on the replay. One step from
 * random state (velocity and m uniform [-1,1), v uniform [0,1)). The error bound of each
 * state: a few roundings of the magnitudes involved, propagated through the update
 * (test_optim.c carries the same bound over 1000 steps). Slots: hyper, param (the master
 * weights), grad, then velocity or m, v. mixed = 1 (neat_*_update_mixed): grad of the
 * given dtype, and a slot "param" of its dtype when param dtype >= 0 (-1: NULL): it must
 * equal the master weights read back, rounded; scaler 0: NULL, 1: [1024, 0, 0] (grad
 * written 1024 times larger), 2: [8, 1, 5] (found_inf: nothing may change, bit for bit).
 * The scaler is the slot after the state, the param copy the last. ---- */

static int opt_has_state(const cf_case *c) {
    return c->row->kind == CF_ADAM_UPDATE || c->row->f[1] != 0;
}

/* The slots of the mixed form: the scaler, the rounded param copy (-1 when absent). */
static int opt_scaler_slot(const cf_case *c) {
    if (!c->row->p[1] || !c->row->p[4]) return -1;
    return 3 + (c->row->kind == CF_ADAM_UPDATE ? 2 : opt_has_state(c));
}
static int opt_param_slot(const cf_case *c) {
    if (!c->row->p[1] || c->row->p[3] < 0) return -1;
    return 3 + (c->row->kind == CF_ADAM_UPDATE ? 2 : opt_has_state(c)) + (c->row->p[4] != 0);
}
static double opt_scale(const cf_case *c) {
    return c->row->p[4] == 1 ? 1024 : c->row->p[4] == 2 ? 8 : 1;
}

static void opt_build(cf_case *c) {
    const double *f = c->row->f;
    const int64_t *p = c->row->p;
    int adam = c->row->kind == CF_ADAM_UPDATE;
    char mixed[96] = "";
    if (p[1])
        snprintf(mixed, sizeof mixed, " mixed grad=%s param=%s scaler=%s",
                 neat_dtype_name((neat_dtype)p[2]),
                 p[3] < 0 ? "NULL" : neat_dtype_name((neat_dtype)p[3]),
                 p[4] == 0   ? "NULL"
                 : p[4] == 1 ? "1024"
                             : "found_inf");
    if (adam)
        cf_describe(c, "n=%lld lr=%g beta1=%g beta2=%g eps=%g weight_decay=%g%s", (long long)p[0],
                    f[0], f[1], f[2], f[3], f[4], mixed);
    else
        cf_describe(c, "n=%lld lr=%g momentum=%g weight_decay=%g nesterov=%g%s", (long long)p[0],
                    f[0], f[1], f[2], f[3], mixed);
    cf_tensor_add(c, "hyper", CF_IN, CF_GIVEN, 1, (int64_t[]){2});
    cf_tensor_add(c, "param", CF_INOUT, CF_DATA, 1, p);
    c->t[cf_tensor_add(c, "grad", CF_IN, CF_DATA, 1, p)].dtype = p[1] ? (neat_dtype)p[2] : NEAT_F32;
    if (opt_has_state(c)) cf_tensor_add(c, adam ? "m" : "velocity", CF_INOUT, CF_DATA, 1, p);
    if (adam) cf_tensor_add(c, "v", CF_INOUT, CF_UNIT, 1, p);
    if (opt_scaler_slot(c) >= 0) cf_tensor_add(c, "scaler", CF_IN, CF_GIVEN, 1, (int64_t[]){3});
    if (opt_param_slot(c) >= 0)
        c->t[cf_tensor_add(c, "param copy", CF_INOUT, CF_DATA, 1, p)].dtype = (neat_dtype)p[3];
}

static double opt_step(const cf_case *c) {
    return c->row->kind == CF_ADAM_UPDATE && c->sub ? 1000 : 1;
}

static void opt_prepare(cf_case *c) {
    c->t[0].host[0] = (float)c->row->f[0];
    c->t[0].host[1] = (float)opt_step(c);
    int s = opt_scaler_slot(c);
    if (s < 0) return;
    float *sc = c->t[s].host;
    sc[0] = (float)opt_scale(c), sc[1] = c->row->p[4] == 2, sc[2] = c->row->p[4] == 2 ? 5 : 0;
    for (int64_t i = 0; i < c->t[2].n; i++) c->t[2].host[i] *= sc[0]; /* exact: a power of 2 */
}

static neat_status opt_record(cf_case *c, neat_cmdbuf *cb) {
    const double *f = c->row->f;
    int mixed = (int)c->row->p[1], state = opt_has_state(c) ? 3 : -1;
    neat_tensor *scaler = cf_t(c, opt_scaler_slot(c)), *param = cf_t(c, opt_param_slot(c));
    if (c->row->kind == CF_ADAM_UPDATE) {
        neat_adam_params a = {(float)f[1], (float)f[2], (float)f[3], (float)f[4]};
        if (mixed)
            return neat_adam_update_mixed(cb, &a, cf_t(c, 0), scaler, cf_t(c, 1), cf_t(c, 2),
                                          cf_t(c, 3), cf_t(c, 4), param);
        return neat_adam_update(cb, &a, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2), cf_t(c, 3), cf_t(c, 4));
    }
    neat_sgd_params s = {(float)f[1], (float)f[2], (int)f[3]};
    if (mixed)
        return neat_sgd_update_mixed(cb, &s, cf_t(c, 0), scaler, cf_t(c, 1), cf_t(c, 2),
                                     cf_t(c, state), param);
    return neat_sgd_update(cb, &s, cf_t(c, 0), cf_t(c, 1), cf_t(c, 2), cf_t(c, state));
}

/* The found_inf rows: every output as it was written, bit for bit. */
static void opt_skipped_reference(cf_case *c) {
    for (int k = 1; k < c->nt; k++) {
        if (c->t[k].role == CF_IN) continue;
        double *ref = cf_out(c, k, 1), *in = cf_in(c, k);
        memcpy(ref, in, sizeof(double) * (size_t)c->t[k].n);
    }
}

static void opt_reference(cf_case *c) {
    const double *f = c->row->f;
    int64_t n = c->row->p[0];
    int adam = c->row->kind == CF_ADAM_UPDATE, state = opt_has_state(c);
    double lr = (float)f[0], t = opt_step(c), eps = EPS;
    if (c->row->p[4] == 2) {
        opt_skipped_reference(c);
        return;
    }
    double *p0 = cf_in(c, 1), *g = cf_in(c, 2), scale = opt_scale(c);
    for (int64_t i = 0; i < n; i++) g[i] /= scale; /* exact: a power of 2 */
    double *s10 = state ? cf_in(c, 3) : NULL, *s20 = adam ? cf_in(c, 4) : NULL;
    double *p = cf_out(c, 1, 0), *s1 = state ? cf_out(c, 3, 0) : NULL;
    double *s2 = adam ? cf_out(c, 4, 0) : NULL;
    memcpy(p, p0, sizeof(double) * (size_t)n);
    if (s1) memcpy(s1, s10, sizeof(double) * (size_t)n);
    if (s2) memcpy(s2, s20, sizeof(double) * (size_t)n);
    double *ep = c->t[1].tol, *e1 = state ? c->t[3].tol : NULL, *e2 = adam ? c->t[4].tol : NULL;
    for (int64_t i = 0; i < n; i++) {
        if (adam) {
            double b1 = (float)f[1], b2 = (float)f[2], ea = (float)f[3], wd = (float)f[4];
            double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
            double m = b1 * s10[i] + (1 - b1) * g[i], v = b2 * s20[i] + (1 - b2) * g[i] * g[i];
            e1[i] = 3 * eps * (b1 * fabs(s10[i]) + (1 - b1) * fabs(g[i]));
            e2[i] = 4 * eps * (b2 * s20[i] + (1 - b2) * g[i] * g[i]);
            /* bias corrections in float: b^t to a few ulp, then 1 - b^t */
            double rbc1 = (4 * eps * pow(b1, t) + eps * bc1) / bc1;
            double rbc2 = (4 * eps * pow(b2, t) + eps * bc2) / bc2;
            double mh = m / bc1, vh = v / bc2, sv = sqrt(vh), den = sv + ea;
            double emh = e1[i] / bc1 + fabs(mh) * (rbc1 + eps);
            double evh = e2[i] / bc2 + vh * (rbc2 + eps);
            double es = vh > 4 * evh ? evh / sv : sqrt(evh);
            double eden = es + eps * (sv + den), u = mh / den;
            double eu = emh / den + fabs(u) * eden / den + 2 * eps * fabs(u);
            ep[i] = lr * eu + 3 * eps * (fabs(p0[i]) + lr * fabs(u)) + eps * fabs(p0[i]) * lr * wd;
        } else {
            double mom = (float)f[1], wd = (float)f[2];
            double gg = g[i] + wd * p0[i];
            double eg = 2 * eps * (fabs(g[i]) + wd * fabs(p0[i]));
            double u = gg, eu = eg;
            if (mom != 0) {
                double v = mom * s10[i] + gg;
                e1[i] = eg + 2 * eps * (mom * fabs(s10[i]) + fabs(gg));
                u = f[3] ? gg + mom * v : v;
                eu = f[3] ? eg + mom * e1[i] + 2 * eps * (fabs(gg) + mom * fabs(v)) : e1[i];
            }
            ep[i] = lr * eu + 2 * eps * (fabs(p0[i]) + lr * fabs(u));
        }
    }
    if (adam) {
        neat_adam_params a = {(float)f[1], (float)f[2], (float)f[3], (float)f[4]};
        ref_adam_update(&a, lr, t, p, g, s1, s2, n);
    } else {
        neat_sgd_params s = {(float)f[1], (float)f[2], (int)f[3]};
        ref_sgd_update(&s, lr, p, g, s1, n);
    }
    int pc = opt_param_slot(c);
    for (int k = 1; k < c->nt; k++) {
        if (c->t[k].role == CF_IN || k == pc) continue; /* grad, scaler; the copy below */
        for (int64_t i = 0; i < n; i++) c->t[k].tol[i] = 4 * c->t[k].tol[i] + 1e-37;
        c->t[k].frob = 4e-5;
    }
    if (pc >= 0) { /* the master weights as they came back, rounded once: exact */
        double *ref = cf_out(c, pc, 1);
        for (int64_t i = 0; i < n; i++) ref[i] = cf_round(c->t[pc].dtype, c->t[1].got[i]);
    }
}

const cf_kind cf_sgd_update_kind = {"sgd_update", 0,          opt_build,
                                    opt_prepare,  opt_record, opt_reference};
const cf_kind cf_adam_update_kind = {"adam_update", 0,          opt_build,
                                     opt_prepare,   opt_record, opt_reference};
