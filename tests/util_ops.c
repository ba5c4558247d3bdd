/* util_ops.c — context, seeds, tensor pairs and comparison of the forward conformance tests. */
#include "util_ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const MODE_NAMES[] = {"strict", "int", "tf32"};

int ops_expect(ctx *c, int ok, const char *file, int line, const char *fmt, ...) {
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

int ops_expect_ok(ctx *c, neat_status st, const char *what, const char *file, int line) {
    return ops_expect(c, st == NEAT_OK, file, line, "%s: %s (%s)", what, neat_status_string(st),
                      neat_last_error());
}

/* ---- cases and seeds ----------------------------------------------------------------- */

void ops_begin(ctx *c, int op_id, const char *op) {
    c->op_id = op_id;
    c->op = op;
    c->cases = c->failed_cases = 0;
}

void ops_end(ctx *c) {
    printf("%-5s %-6s %-16s %3d cases, %d failed\n", c->dev_name, MODE_NAMES[c->mode], c->op,
           c->cases, c->failed_cases);
}

nt_rng ops_case_begin(ctx *c, int idx, const char *fmt, ...) {
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

void ops_case_end(ctx *c) {
    c->cases++;
    c->failed_cases += c->case_failed;
}

const int64_t OPS_SIZES[14] = {0, 1, 2, 3, 7, 13, 31, 63, 64, 65, 127, 129, 255, 257};
#define NSIZES ((int)(sizeof OPS_SIZES / sizeof OPS_SIZES[0]))

int64_t ops_draw_size(nt_rng *r, int max_index) {
    return OPS_SIZES[nt_randint(r, 0, max_index < NSIZES - 1 ? max_index : NSIZES - 1)];
}

/* ---- host/device tensor pairs ------------------------------------------------------- */

int64_t ops_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

dims_str ops_dims(int ndim, const int64_t *shape) {
    dims_str d = {"["};
    for (int i = 0; i < ndim; i++)
        snprintf(d.s + strlen(d.s), sizeof d.s - strlen(d.s), "%s%lld", i ? "," : "",
                 (long long)shape[i]);
    strcat(d.s, "]");
    return d;
}

int ops_in_fill(const ctx *c) { return c->mode == MODE_INT ? F_INT : F_UNIFORM; }

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

int ht_make(ctx *c, ht *h, int ndim, const int64_t *shape, int how, nt_rng *r) {
    h->n = ops_numel(ndim, shape);
    h->v = nt_alloc(h->n);
    h->t = NULL;
    if (!EXPECT(c, h->v != NULL, "host allocation of %lld floats", (long long)h->n)) return 0;
    fill(h->v, h->n, how, r);
    if (!EXPECT_OK(c, neat_tensor_create(c->dev, ndim, shape, &h->t), "neat_tensor_create"))
        return 0;
    return EXPECT_OK(c, neat_tensor_write(h->t, h->v, h->n), "neat_tensor_write");
}

int ht_upload(ctx *c, ht *h) {
    return EXPECT_OK(c, neat_tensor_write(h->t, h->v, h->n), "neat_tensor_write");
}

void ht_free(ht *h) {
    neat_tensor_destroy(h->t);
    nt_free(h->v);
    h->t = NULL;
    h->v = NULL;
}

double *ops_dnew(int64_t n) { return malloc(sizeof(double) * (size_t)(n + 1)); }

double *ops_to_double(const float *v, int64_t n) {
    double *d = ops_dnew(n);
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

float *ht_read(ctx *c, const ht *h, const char *name) {
    float *got = nt_alloc(h->n);
    nt_poison(got, h->n);
    EXPECT_OK(c, neat_tensor_read(h->t, got, h->n), name);
    EXPECT(c, nt_guard_ok(got, h->n), "%s: guard band of the host buffer overwritten", name);
    return got;
}

void ht_unchanged(ctx *c, const ht *h, const char *name) {
    float *got = ht_read(c, h, name);
    EXPECT(c, memcmp(got, h->v, sizeof(float) * (size_t)h->n) == 0,
           "input %s was modified by the op", name);
    nt_free(got);
}

int ops_run(ctx *c, neat_cmdbuf *cb, neat_status st) {
    if (!EXPECT_OK(c, st, "record")) return 0;
    if (!EXPECT_OK(c, neat_cmdbuf_commit(cb), "neat_cmdbuf_commit")) return 0;
    return EXPECT_OK(c, neat_cmdbuf_wait(cb), "neat_cmdbuf_wait");
}

/* ---- comparison ------------------------------------------------------------------- */

void ops_compare(ctx *c, const char *name, const float *got, const double *ref,
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

int ops_act_smooth(neat_activation act) {
    return act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH || act == NEAT_ACT_GELU;
}
