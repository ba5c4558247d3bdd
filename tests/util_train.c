/* util_train.c — cases, host arrays, transfers and comparison of the training tests. */
#include "util_train.h"

#include <math.h>
#include <stdlib.h>

double *tr_dnew(int64_t n) { return calloc((size_t)n + 1, sizeof(double)); }

double *tr_anew(arena *a, int64_t n) {
    if (a->n == 40) return NULL;
    return a->p[a->n++] = tr_dnew(n);
}

void tr_afree(arena *a) {
    for (int i = 0; i < a->n; i++) free(a->p[i]);
    a->n = 0;
}

void tr_rand_fill(nt_rng *r, double *v, int64_t n, double lo, double hi) {
    for (int64_t i = 0; i < n; i++) v[i] = (float)nt_uniform(r, lo, hi);
}

static int64_t numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

int tr_setup_ok(neat_status st, const char *what, const char *ctx) {
    if (st == NEAT_OK) return 1;
    CHECK(0, "%s: %s: %s (%s)", ctx, what, neat_status_string(st), neat_last_error());
    return 0;
}

int tr_upload(tcase *c, neat_tensor *t, const double *v, int64_t n) {
    if (n == 0) return 1;
    float *f = malloc(sizeof(float) * (size_t)n);
    if (!f) return c->failed = 1, tr_setup_ok(NEAT_ERR_OUT_OF_MEMORY, "malloc", c->ctx);
    for (int64_t i = 0; i < n; i++) f[i] = v ? (float)v[i] : NAN;
    int ok = tr_setup_ok(neat_tensor_write(t, f, n), "neat_tensor_write", c->ctx);
    free(f);
    if (!ok) c->failed = 1;
    return ok;
}

neat_tensor *tr_mk(tcase *c, int ndim, const int64_t *shape, const double *v) {
    neat_tensor *t = NULL;
    if (c->failed || c->nt == MAX_T) return c->failed = 1, NULL;
    if (!tr_setup_ok(neat_tensor_create(c->dev, ndim, shape, &t), "neat_tensor_create", c->ctx))
        return c->failed = 1, NULL;
    c->t[c->nt++] = t;
    tr_upload(c, t, v, numel(ndim, shape));
    return t;
}

int tr_download(tcase *c, const neat_tensor *t, double *out, int64_t n) {
    float *f = nt_alloc(n);
    if (!f) return tr_setup_ok(NEAT_ERR_OUT_OF_MEMORY, "nt_alloc", c->ctx);
    nt_poison(f, n);
    int ok = tr_setup_ok(neat_tensor_read(t, f, n), "neat_tensor_read", c->ctx);
    ok = ok && CHECK(nt_guard_ok(f, n), "%s: neat_tensor_read wrote outside %lld floats", c->ctx,
                     (long long)n);
    for (int64_t i = 0; i < n; i++) out[i] = f[i];
    nt_free(f);
    return ok;
}

void tr_case_free(tcase *c) {
    for (int i = 0; i < c->nt; i++) neat_tensor_destroy(c->t[i]);
    c->nt = 0;
}

int tr_run(tcase *c, neat_cmdbuf *cb) {
    neat_status st = neat_cmdbuf_commit(cb);
    if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
    return tr_setup_ok(st, "commit/wait", c->ctx);
}

int tr_compare(const tcase *c, const char *what, const double *got, const double *ref,
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

const char *tr_act_name(neat_activation a) {
    static const char *names[] = {"none", "relu", "sigmoid", "tanh", "gelu"};
    return names[a];
}
