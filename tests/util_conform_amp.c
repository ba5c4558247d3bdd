/*
 * util_conform_amp.c — the loss-scale op kinds of the conformance table (mixed precision;
 * the mixed optimizers are rows of sgd_update and adam_update, util_conform_optim.c).
 * Every result is exact: one float32 product rounded once to its dtype, a flag, or the
 * scale's float32 update.
 */
#include "util_conform.h"

#include <math.h>

/* ---- loss_scale: p = {n, dtype, inplace}, f = {scale}. y = x * scale, compared bit for
 * bit with the float32 product rounded to the dtype. Slots: scaler [scale, 0, 0], x, y
 * (absent when in place: x is written). ---- */

static void ls_build(cf_case *c) {
    const int64_t *p = c->row->p;
    cf_describe(c, "n=%lld %s scale=%g%s", (long long)p[0], neat_dtype_name((neat_dtype)p[1]),
                c->row->f[0], p[2] ? " in place" : "");
    cf_tensor_add(c, "scaler", CF_IN, CF_GIVEN, 1, (int64_t[]){3});
    c->t[cf_tensor_add(c, "x", p[2] ? CF_INOUT : CF_IN, CF_WIDE, 1, p)].dtype = (neat_dtype)p[1];
    if (!p[2]) c->t[cf_tensor_add(c, "y", CF_OUT, CF_DATA, 1, p)].dtype = (neat_dtype)p[1];
}

static void ls_prepare(cf_case *c) {
    c->t[0].host[0] = (float)c->row->f[0], c->t[0].host[1] = 0, c->t[0].host[2] = 0;
}

static neat_status ls_record(cf_case *c, neat_cmdbuf *cb) {
    return neat_loss_scale(cb, cf_t(c, 0), cf_t(c, 1), cf_t(c, c->row->p[2] ? 1 : 2));
}

static void ls_reference(cf_case *c) {
    int y = c->row->p[2] ? 1 : 2;
    double *x = cf_in(c, 1), *ref = cf_out(c, y, 1);
    float s = (float)c->row->f[0];
    for (int64_t i = 0; i < c->t[1].n; i++)
        ref[i] = cf_round(c->t[y].dtype, (float)(x[i] * (double)s));
}

const cf_kind cf_loss_scale_kind = {"loss_scale", 0, ls_build, ls_prepare, ls_record, ls_reference};

/* ---- loss_scale_check: p = {ntensors (0..3), what}: tensors f32 [37], bf16 [100],
 * f16 [1031] (the first ntensors of them), what 0: all finite, 1: a NaN in the last one,
 * 2: +inf in the f16 one, 3: -inf in the first. The scaler [4, prior, 7] comes back as
 * [4, found, 7] with prior = !found (so the flag is written, both ways). ---- */

static const int64_t CHECK_N[3] = {37, 100, 1031};
static const neat_dtype CHECK_DT[3] = {NEAT_F32, NEAT_BF16, NEAT_F16};

static int check_found(const cf_case *c) { return c->row->p[0] > 0 && c->row->p[1] != 0; }

static void check_build(cf_case *c) {
    static const char *const what[] = {"all finite", "NaN in the last", "+inf in f16",
                                       "-inf in the first"};
    cf_describe(c, "%lld tensors, %s", (long long)c->row->p[0], what[c->row->p[1]]);
    cf_tensor_add(c, "scaler", CF_INOUT, CF_GIVEN, 1, (int64_t[]){3});
    static const char *const names[3] = {"t0 f32", "t1 bf16", "t2 f16"};
    for (int i = 0; i < c->row->p[0]; i++)
        c->t[cf_tensor_add(c, names[i], CF_IN, CF_WIDE, 1, &CHECK_N[i])].dtype = CHECK_DT[i];
}

static void check_prepare(cf_case *c) {
    int64_t nt = c->row->p[0];
    float *s = c->t[0].host;
    s[0] = 4, s[1] = (float)!check_found(c), s[2] = 7;
    if (nt == 0) return;
    nt_rng *r = &c->rng;
    switch (c->row->p[1]) {
    case 1: c->t[nt].host[nt_randint(r, 0, CHECK_N[nt - 1] - 1)] = NAN; break;
    case 2: c->t[3].host[nt_randint(r, 0, CHECK_N[2] - 1)] = INFINITY; break;
    case 3: c->t[1].host[nt_randint(r, 0, CHECK_N[0] - 1)] = -INFINITY; break;
    default: break;
    }
}

static neat_status check_record(cf_case *c, neat_cmdbuf *cb) {
    const neat_tensor *ts[3] = {cf_t(c, 1), cf_t(c, 2), cf_t(c, 3)};
    int n = (int)c->row->p[0];
    return neat_loss_scale_check(cb, n ? ts : NULL, n, cf_t(c, 0));
}

static void check_reference(cf_case *c) {
    double *ref = cf_out(c, 0, 1);
    ref[0] = 4, ref[1] = check_found(c), ref[2] = 7;
}

const cf_kind cf_loss_scale_check_kind = {
    "loss_scale_check", 0, check_build, check_prepare, check_record, check_reference};

/* ---- loss_scale_update: p = {growth_interval, found_inf, good before}, f = {scale, growth,
 * backoff}. Slot: the scaler, [scale, found, good] in and the rule's result out. ---- */

static void upd_build(cf_case *c) {
    const int64_t *p = c->row->p;
    const double *f = c->row->f;
    cf_describe(c, "interval=%lld found_inf=%lld good=%lld scale=%g growth=%g backoff=%g",
                (long long)p[0], (long long)p[1], (long long)p[2], f[0], f[1], f[2]);
    cf_tensor_add(c, "scaler", CF_INOUT, CF_GIVEN, 1, (int64_t[]){3});
}

static void upd_prepare(cf_case *c) {
    float *s = c->t[0].host;
    s[0] = (float)c->row->f[0], s[1] = (float)c->row->p[1], s[2] = (float)c->row->p[2];
}

static neat_loss_scale_params upd_params(const cf_case *c) {
    return (neat_loss_scale_params){(float)c->row->f[1], (float)c->row->f[2], (int)c->row->p[0]};
}

static neat_status upd_record(cf_case *c, neat_cmdbuf *cb) {
    neat_loss_scale_params p = upd_params(c);
    return neat_loss_scale_update(cb, &p, cf_t(c, 0));
}

static void upd_reference(cf_case *c) {
    neat_loss_scale_params p = upd_params(c);
    double *ref = cf_out(c, 0, 1);
    float scale = (float)c->row->f[0], found = (float)c->row->p[1];
    float good = (float)c->row->p[2];
    ref[1] = found;
    if (found != 0) {
        ref[0] = (float)(scale * p.backoff_factor), ref[2] = 0;
    } else if (good + 1 >= (float)p.growth_interval) {
        float grown = (float)((double)scale * p.growth_factor);
        ref[0] = isfinite(grown) ? grown : scale, ref[2] = 0;
    } else {
        ref[0] = scale, ref[2] = good + 1;
    }
}

const cf_kind cf_loss_scale_update_kind = {"loss_scale_update", 0,          upd_build,
                                           upd_prepare,         upd_record, upd_reference};
