/* util_conform.c — the runner of the conformance table: cases, submissions, comparison,
 * counts. */
#include "util_conform.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char *const PASS_NAMES[CF_NPASSES] = {"strict", "int", "tf32"};

/* Counts of the whole run and of the current (device, pass, kind). */
static struct { long comp_pass, comp_fail, setup_pass, setup_fail, refused_bf16; } tot;
static struct {
    int cases, failed_cases;
    long comps, failed;
} cur;

static void report(cf_case *c, const char *file, int line, const char *fmt, va_list ap) {
    char msg[600];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char where[300];
    if (line)
        snprintf(where, sizeof where, "%s:%d", file, line);
    else
        snprintf(where, sizeof where, "%s", file);
    fprintf(stderr, "FAIL %s: %s %s%s [%s] seed=%#llx %s (%s): %s\n", where, c->dev_name,
            cf_kinds[c->row->kind]->name, c->nhwc ? " nhwc" : "", PASS_NAMES[c->pass],
            (unsigned long long)c->seed, c->desc, c->sub ? "replay" : "first commit", msg);
    c->failed = 1;
}

/* A setup check: counted apart from the comparisons. */
static int setup(cf_case *c, int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int setup(cf_case *c, int ok, const char *file, int line, const char *fmt, ...) {
    if (ok) {
        tot.setup_pass++;
        return 1;
    }
    tot.setup_fail++;
    cur.failed++;
    va_list ap;
    va_start(ap, fmt);
    report(c, file, line, fmt, ap);
    va_end(ap);
    return 0;
}
#define SETUP(c, cond, ...) setup((c), !!(cond), __FILE__, __LINE__, __VA_ARGS__)

static int setup_ok(cf_case *c, neat_status st, const char *what, int line) {
    return setup(c, st == NEAT_OK, __FILE__, line, "%s: %s (%s)", what, neat_status_string(st),
                 neat_last_error());
}
#define SETUP_OK(c, st, what) setup_ok((c), (st), (what), __LINE__)

/* A comparison: one per compared output per submission. */
static void compared(cf_case *c, int ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void compared(cf_case *c, int ok, const char *fmt, ...) {
    cur.comps++;
    if (ok) {
        tot.comp_pass++;
        return;
    }
    tot.comp_fail++;
    cur.failed++;
    va_list ap;
    va_start(ap, fmt);
    report(c, "compare", 0, fmt, ap);
    va_end(ap);
}

/* ---- for the kinds --------------------------------------------------------------------- */

int cf_tensor_add(cf_case *c, const char *name, int role, int fill, int ndim,
                  const int64_t *shape) {
    if (c->nt == CF_MAX_TENSORS) abort(); /* a kind declares more than any needs */
    cf_tensor *t = &c->t[c->nt];
    memset(t, 0, sizeof *t);
    t->name = name, t->role = role, t->fill = fill, t->ndim = ndim;
    t->n = 1;
    for (int i = 0; i < ndim; i++) t->n *= (t->shape[i] = shape[i]);
    return c->nt++;
}

void cf_describe(cf_case *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->desc, sizeof c->desc, fmt, ap);
    va_end(ap);
}

neat_tensor *cf_t(const cf_case *c, int i) { return i < 0 ? NULL : c->t[i].t; }

double *cf_dnew(cf_case *c, int64_t n) {
    if (c->narena == 64) abort(); /* a kind asks for more arrays than any needs */
    return c->arena[c->narena++] = calloc((size_t)n + 1, sizeof(double));
}

double *cf_in(cf_case *c, int i) {
    double *d = cf_dnew(c, c->t[i].n);
    for (int64_t k = 0; k < c->t[i].n; k++) d[k] = c->t[i].host[k];
    return d;
}

double *cf_out(cf_case *c, int i, int exact) {
    cf_tensor *t = &c->t[i];
    t->ref = cf_dnew(c, t->n);
    t->tol = exact ? NULL : cf_dnew(c, t->n);
    t->frob = -1;
    t->elem = 1;
    return t->ref;
}

void cf_set(cf_case *c, int i, const double *v) {
    for (int64_t k = 0; k < c->t[i].n; k++) c->t[i].host[k] = (float)v[k];
}

void cf_fill_uniform(cf_case *c, int i, double lo, double hi) {
    for (int64_t k = 0; k < c->t[i].n; k++) c->t[i].host[k] = (float)nt_uniform(&c->rng, lo, hi);
}

double cf_round(neat_dtype dtype, double x) {
    if (dtype == NEAT_F32 || x == 0 || !isfinite(x)) return (float)x;
    int bits = dtype == NEAT_BF16 ? 8 : 11, qmin = dtype == NEAT_BF16 ? -133 : -24, e;
    frexp(x, &e); /* |x| = m 2^e, 0.5 <= m < 1: the quantum is 2^(e - bits) */
    int q = e - bits < qmin ? qmin : e - bits;
    double r = ldexp(rint(ldexp(x, -q)), q); /* rint: ties to even */
    double max = dtype == NEAT_BF16 ? 0x1.fep127 : 65504;
    return fabs(r) > max ? copysign(INFINITY, x) : r;
}

int cf_act_smooth(neat_activation act) {
    return act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH || act == NEAT_ACT_GELU;
}

/* Largest slope of each activation: how far an error of z moves act(z). */
static double act_slope(neat_activation act) {
    return act == NEAT_ACT_SIGMOID ? 0.25 : act == NEAT_ACT_GELU ? 1.13 : 1.0;
}

void cf_gemm_tol(cf_case *c, int i, const double *z, const double *abs, int64_t k,
                 neat_activation act) {
    cf_tensor *t = &c->t[i];
    if (c->pass == CF_INT) {
        t->tol = NULL;
        return;
    }
    if (c->pass == CF_TF32) {
        t->elem = 0;
        t->frob = 2e-3;
        return;
    }
    for (int64_t j = 0; j < t->n; j++) {
        t->tol[j] = act_slope(act) * (2.0 * (double)k + 4) * CF_EPS * abs[j];
        if (cf_act_smooth(act)) t->tol[j] += 1e-5 * fabs(t->ref[j]) + 4 * CF_EPS * (1 + fabs(z[j]));
    }
    t->frob = 1e-5;
}

/* ---- one case ---------------------------------------------------------------------------- */

static void fill(cf_case *c, cf_tensor *t) {
    nt_rng *r = &c->rng;
    if (t->role == CF_OUT) {
        nt_poison(t->host, t->n);
        return;
    }
    for (int64_t i = 0; i < t->n; i++) switch (t->fill) {
        case CF_DATA:
            t->host[i] =
                c->pass == CF_INT ? (float)nt_randint(r, -4, 4) : (float)nt_uniform(r, -1, 1);
            break;
        case CF_WIDE: t->host[i] = (float)nt_uniform(r, -8, 8); break;
        case CF_NEG: t->host[i] = (float)nt_uniform(r, -3, -1); break;
        case CF_UNIT: t->host[i] = (float)nt_uniform(r, 0, 1); break;
        default: break;
        }
}

static void compare(cf_case *c, cf_tensor *t) {
    int64_t bad = 0, first = -1;
    double diff2 = 0, ref2 = 0;
    for (int64_t i = 0; i < t->n; i++) {
        double g = t->got[i], d = g - t->ref[i];
        int ok = !t->elem ? !isnan(g)
                 : t->tol ? fabs(d) <= t->tol[i]
                          : t->got[i] == (float)t->ref[i];
        if (!ok && bad++ == 0) first = i;
        diff2 += d * d;
        ref2 += t->ref[i] * t->ref[i];
    }
    if (bad) {
        compared(c, 0, "%s: %lld of %lld elements wrong, first [%lld] got %.9g want %.9g tol %.3g",
                 t->name, (long long)bad, (long long)t->n, (long long)first, t->got[first],
                 t->ref[first], t->tol ? t->tol[first] : 0.0);
        return;
    }
    int frob_ok = t->frob < 0 || diff2 == 0 || sqrt(diff2) <= t->frob * sqrt(ref2);
    compared(c, frob_ok, "%s: relative Frobenius error %.3g > %.3g", t->name,
             sqrt(diff2) / sqrt(ref2), t->frob);
}

/* A 4-D tensor of an NHWC case: its device tensor is [d0,d2,d3,d1] of its NCHW shape. */
static int permuted(const cf_case *c, const cf_tensor *t) {
    return c->nhwc && t->ndim == 4 && t->n > 0;
}

/* neat_tensor_read of slot t into dst (NCHW order), through a permuted copy when needed. */
static neat_status read_nchw(cf_case *c, cf_tensor *t, float *dst) {
    if (!permuted(c, t)) return neat_tensor_read(t->t, dst, t->n);
    neat_status st = neat_tensor_read(t->t, c->tmp, t->n);
    if (st == NEAT_OK) nt_permute_nhwc(t->shape, c->tmp, dst, 0);
    return st;
}

/* Read slot t into t->got (poisoned first) and check its guard bands. */
static int read_back(cf_case *c, cf_tensor *t) {
    nt_poison(t->got, t->n);
    return SETUP_OK(c, read_nchw(c, t, t->got), "neat_tensor_read") &&
           SETUP(c, nt_guard_ok(t->got, t->n), "%s: guard band of the host buffer overwritten",
                 t->name) &&
           SETUP(c, !c->tmp || nt_guard_ok(c->tmp, c->ntmp),
                 "%s: guard band of the permuted host buffer overwritten", t->name);
}

/* One submission: fresh inputs, poisoned outputs, commit, read, compare. */
static int submit(cf_case *c, const cf_kind *k, neat_cmdbuf *cb) {
    for (int i = 0; i < c->nt; i++) fill(c, &c->t[i]);
    if (k->prepare) k->prepare(c);
    for (int i = 0; i < c->nt; i++) {
        cf_tensor *t = &c->t[i];
        const float *src = t->host;
        if (permuted(c, t)) nt_permute_nhwc(t->shape, t->host, c->tmp, 1), src = c->tmp;
        if (!SETUP_OK(c, neat_tensor_write(t->t, src, t->n), "neat_tensor_write") ||
            (t->dtype != NEAT_F32 && !SETUP_OK(c, read_nchw(c, t, t->host), "neat_tensor_read")))
            return 0;
    }
    if (!SETUP_OK(c, neat_cmdbuf_commit(cb), "neat_cmdbuf_commit") ||
        !SETUP_OK(c, neat_cmdbuf_wait(cb), "neat_cmdbuf_wait"))
        return 0;
    for (int i = 0; i < c->nt; i++) {
        cf_tensor *t = &c->t[i];
        if (!read_back(c, t)) return 0;
        if (t->role == CF_IN)
            SETUP(c, memcmp(t->got, t->host, sizeof(float) * (size_t)t->n) == 0,
                  "input %s was modified by the op", t->name);
    }
    k->reference(c);
    for (int i = 0; i < c->nt; i++)
        if (c->t[i].role != CF_IN) compare(c, &c->t[i]);
    return 1;
}

static void free_arena(cf_case *c) {
    for (int i = 0; i < c->narena; i++) free(c->arena[i]);
    c->narena = 0;
}

/* Metal runs no bf16 op (no bfloat16 data type in MPS's macOS 12 SDK:
 * src/backends/metal/half.m): there a case with a bf16 tensor must be refused when recorded
 * (UNSUPPORTED, the message naming bf16), which is checked, and is counted as skipped. */
static int metal_bf16(const cf_case *c) {
    if (strcmp(c->dev_name, "metal") != 0) return 0;
    for (int i = 0; i < c->nt; i++)
        if (c->t[i].dtype == NEAT_BF16) return 1;
    return 0;
}

static void run_case(neat_device *dev, const char *dev_name, const cf_row *row, int pass, int idx,
                     int nhwc, uint64_t base) {
    const cf_kind *k = cf_kinds[row->kind];
    cf_case c;
    memset(&c, 0, sizeof c);
    c.dev = dev, c.dev_name = dev_name, c.row = row, c.pass = pass, c.idx = idx, c.nhwc = nhwc;
    /* The seed depends only on the base, the kind, the pass, the layout and the row's index. */
    nt_rng mix = {base ^ ((uint64_t)row->kind << 40) ^ ((uint64_t)pass << 32) ^
                  ((uint64_t)nhwc << 36) ^ (uint64_t)idx};
    c.seed = nt_next(&mix);
    c.rng.s = c.seed;
    k->build(&c);
    neat_cmdbuf *cb = NULL;
    int ok = 1;
    for (int i = 0; ok && i < c.nt; i++) {
        cf_tensor *t = &c.t[i];
        int64_t shape[4] = {t->shape[0], t->shape[1], t->shape[2], t->shape[3]};
        if (c.nhwc && t->ndim == 4) {
            shape[1] = t->shape[2], shape[2] = t->shape[3], shape[3] = t->shape[1];
            c.ntmp = t->n > c.ntmp ? t->n : c.ntmp;
        }
        t->host = nt_alloc(t->n);
        t->got = nt_alloc(t->n);
        ok = SETUP(&c, t->host && t->got, "host allocation of %lld floats", (long long)t->n) &&
             SETUP_OK(&c, neat_tensor_create_typed(dev, t->dtype, t->ndim, shape, 0, &t->t),
                      "neat_tensor_create_typed");
    }
    if (ok && c.ntmp) {
        c.tmp = nt_alloc(c.ntmp);
        ok = SETUP(&c, c.tmp != NULL, "host allocation of %lld floats", (long long)c.ntmp);
    }
    ok = ok && SETUP_OK(&c, neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    if (ok && metal_bf16(&c)) {
        neat_status st = k->record(&c, cb);
        tot.refused_bf16 +=
            SETUP(&c, st == NEAT_ERR_UNSUPPORTED && strstr(neat_last_error(), "bf16"),
                  "record: %s (%s), want UNSUPPORTED naming bf16 on metal", neat_status_string(st),
                  neat_last_error());
        ok = 0;
    }
    ok = ok && SETUP_OK(&c, k->record(&c, cb), "record");
    for (c.sub = 0; ok && c.sub < 2; c.sub++) {
        ok = submit(&c, k, cb);
        free_arena(&c);
    }
    neat_cmdbuf_destroy(cb);
    for (int i = 0; i < c.nt; i++) {
        neat_tensor_destroy(c.t[i].t);
        nt_free(c.t[i].host);
        nt_free(c.t[i].got);
    }
    nt_free(c.tmp);
    free_arena(&c);
    cur.cases++;
    cur.failed_cases += c.failed;
}

/* ---- the table ---------------------------------------------------------------------------- */

/* NEATML_TEST_SHARD=i/n runs the rows whose index is i modulo n (0 <= i < n), so that a
 * slow tool (compute-sanitizer) can take the table in parallel parts that together are all
 * of it; unset, every row. A malformed value runs nothing and fails. */
static int shard_get(int *i, int *n) {
    const char *e = getenv("NEATML_TEST_SHARD");
    *i = 0, *n = 1;
    if (!e || !*e) return 1;
    if (sscanf(e, "%d/%d", i, n) != 2 || *n < 1 || *i < 0 || *i >= *n) return 0;
    printf("conformance: shard %d of %d (NEATML_TEST_SHARD): rows %d, %d + %d, ...\n", *i, *n, *i,
           *i, *n);
    return 1;
}

/* NEATML_TEST_KINDS=name,name,...: only the kinds named (a slow tool over some ops); unset,
 * every kind. Printed, so that a partial run says so. */
static int kind_wanted(const char *name) { return nt_env_lists("NEATML_TEST_KINDS", name); }

int cf_run_table(const cf_row *rows, int n, uint64_t base) {
    if (getenv("NEATML_TEST_KINDS") && *getenv("NEATML_TEST_KINDS"))
        printf("conformance: only the kinds %s (NEATML_TEST_KINDS)\n", getenv("NEATML_TEST_KINDS"));
    int shard, nshards;
    if (!shard_get(&shard, &nshards)) {
        fprintf(stderr, "FAIL NEATML_TEST_SHARD=\"%s\": want i/n with 0 <= i < n\n",
                getenv("NEATML_TEST_SHARD"));
        tot.setup_fail++;
        n = 0;
    }
    neat_device *devs[NT_MAX_BACKENDS];
    const char *names[NT_MAX_BACKENDS];
    int ndev = nt_open_devices(devs, names);
    for (int d = 0; d < ndev; d++)
        for (int pass = 0; pass < CF_NPASSES; pass++) {
            neat_math_mode mode = pass == CF_TF32 ? NEAT_MATH_TF32 : NEAT_MATH_STRICT;
            neat_status st = neat_device_set_math_mode(devs[d], mode);
            tot.setup_pass += st == NEAT_OK;
            tot.setup_fail += st != NEAT_OK;
            if (st != NEAT_OK) {
                fprintf(stderr, "FAIL %s: neat_device_set_math_mode(%s): %s (%s)\n", names[d],
                        PASS_NAMES[pass], neat_status_string(st), neat_last_error());
                continue;
            }
            for (int kind = 0; kind < CF_NKINDS; kind++) {
                const cf_kind *k = cf_kinds[kind];
                if ((pass == CF_INT && !(k->flags & CF_K_INT)) || !kind_wanted(k->name)) continue;
                for (int nhwc = 0; nhwc <= !!(k->flags & CF_K_LAYOUT); nhwc++) {
                    memset(&cur, 0, sizeof cur);
                    for (int i = 0, idx = 0; i < n; i++)
                        if (rows[i].kind == kind) {
                            /* idx counts every row of the kind: a row's seed is its own,
                             * sharded or not */
                            if (i % nshards == shard)
                                run_case(devs[d], names[d], &rows[i], pass, idx, nhwc, base);
                            idx++;
                        }
                    printf("%-5s %-6s %-22s%s %3d cases, %4ld comparisons, %ld failed\n", names[d],
                           PASS_NAMES[pass], k->name, nhwc ? " nhwc" : "", cur.cases, cur.comps,
                           cur.failed);
                }
            }
        }
    for (int d = 0; d < ndev; d++) neat_device_set_math_mode(devs[d], NEAT_MATH_STRICT);
    if (tot.refused_bf16)
        nt_skip("metal: %ld cases with bf16 tensors, refused when recorded as they must be (no "
                "bfloat16 in MPS's macOS 12 SDK)",
                tot.refused_bf16);
    nt_close_devices(devs, ndev);
    printf("conformance: %ld comparisons (%ld failed), %ld setup checks (%ld failed)\n",
           tot.comp_pass + tot.comp_fail, tot.comp_fail, tot.setup_pass + tot.setup_fail,
           tot.setup_fail);
    /* The closing line counts comparisons as passed; a failed setup check fails the run. */
    nt_passed = (int)tot.comp_pass;
    nt_failed = (int)(tot.comp_fail + tot.setup_fail);
    return nt_finish("conformance");
}
