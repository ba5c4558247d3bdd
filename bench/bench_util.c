/* bench_util.c — timing loop, random tensors, read-back and the bookkeeping of a case. */
#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int bench_ok(bench_result *res, neat_status st, const char *what) {
    if (st == NEAT_OK) return 1;
    if (res->outcome != BENCH_OK) return 0; /* keep the first reason */
    if (st == NEAT_ERR_UNSUPPORTED) {
        res->outcome = BENCH_UNAVAILABLE;
        snprintf(res->reason, sizeof res->reason, "%s", neat_last_error());
        if (!res->reason[0]) snprintf(res->reason, sizeof res->reason, "%s: unsupported", what);
    } else {
        res->outcome = BENCH_ERROR;
        snprintf(res->reason, sizeof res->reason, "%s: %s: %s", what, neat_status_string(st),
                 neat_last_error());
    }
    return 0;
}

void bench_fail(bench_result *res, const char *fmt, ...) {
    if (res->outcome != BENCH_OK) return;
    res->outcome = BENCH_FAILED;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

neat_status bench_random_tensor(bench_ctx *ctx, rng64 *rng, int ndim, const int64_t *shape,
                                double lo, double hi, neat_tensor **out, float **host) {
    return bench_random_tensor_typed(ctx, rng, NEAT_F32, ndim, shape, lo, hi, out, host);
}

neat_status bench_random_tensor_typed(bench_ctx *ctx, rng64 *rng, neat_dtype dtype, int ndim,
                                      const int64_t *shape, double lo, double hi, neat_tensor **out,
                                      float **host) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
    if (!buf) return NEAT_ERR_OUT_OF_MEMORY;
    /* f16 rounds values below 2^-25 to zero: keep to its normal range (bf16 has float's) */
    const float tiny = dtype == NEAT_F16 ? 0x1.0p-14f : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float v;
        do v = (float)rng64_uniform(rng, lo, hi);
        while (fabsf(v) <= tiny); /* never a zero: a kernel that skips work must not look right */
        buf[i] = v;
    }
    neat_status st = neat_tensor_create_typed(ctx->dev, dtype, ndim, shape, 0, out);
    if (st == NEAT_OK) st = neat_tensor_write(*out, buf, n);
    if (host && st == NEAT_OK)
        *host = buf;
    else
        free(buf);
    return st;
}

double bench_roundoff(neat_dtype dtype) {
    return dtype == NEAT_BF16 ? 0x1.0p-8 : dtype == NEAT_F16 ? 0x1.0p-11 : 0x1.0p-24;
}

int bench_math(bench_ctx *ctx, bench_result *res, neat_math_mode math) {
    if (math == NEAT_MATH_TF32 && ctx->props.backend == NEAT_BACKEND_CPU) {
        res->outcome = BENCH_UNAVAILABLE;
        snprintf(res->reason, sizeof res->reason,
                 "TF32 is a GPU math mode: the cpu backend runs matmul and conv in strict "
                 "float32 whatever neat_device_set_math_mode says (the float32 case's work)");
        return 0;
    }
    return bench_ok(res, neat_device_set_math_mode(ctx->dev, math), "neat_device_set_math_mode");
}

float *bench_read_back(const neat_tensor *t, neat_status *st) {
    int64_t n = 0;
    *st = neat_tensor_numel(t, &n);
    if (*st != NEAT_OK) return NULL;
    float *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof *buf);
    if (!buf) {
        *st = NEAT_ERR_OUT_OF_MEMORY;
        return NULL;
    }
    *st = neat_tensor_read(t, buf, n);
    if (*st != NEAT_OK) {
        free(buf);
        return NULL;
    }
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

neat_status bench_run_once(neat_cmdbuf *cb) {
    neat_status st = neat_cmdbuf_commit(cb);
    if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
    return st;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

neat_status bench_time(bench_ctx *ctx, neat_cmdbuf *cb, bench_result *res) {
    neat_status st;
    double t0 = now_s();
    for (int i = 0; i < 50; i++) {
        if ((st = bench_run_once(cb)) != NEAT_OK) return st;
        if (i >= 1 && now_s() - t0 > 0.1) break;
    }
    int reps = ctx->reps > 0 ? ctx->reps : 1;
    double *ms = malloc(2 * (size_t)reps * sizeof *ms), *wall = ms + reps;
    if (!ms) return NEAT_ERR_OUT_OF_MEMORY;
    for (int i = 0; i < reps; i++) {
        double a = now_s(), dev_s = 0;
        st = ctx->queued ? neat_cmdbuf_commit(cb) : NEAT_OK; /* untimed: device kept busy */
        if (st == NEAT_OK) st = neat_cmdbuf_commit(cb);
        if (st == NEAT_OK) st = neat_cmdbuf_wait(cb);
        double b = now_s();
        if (ctx->queued) b = a + 0.5 * (b - a);
        if (st == NEAT_OK) st = neat_cmdbuf_device_time(cb, &dev_s);
        if (st != NEAT_OK) {
            free(ms);
            return st;
        }
        ms[i] = 1e3 * dev_s;
        wall[i] = 1e3 * (b - a);
    }
    res->median_ms = median_of(ms, reps);
    res->wall_ms = median_of(wall, reps);
    free(ms);
    return NEAT_OK;
}

void bench_begin(bench_ctx *ctx, bench_result *res, rng64 *rng, uint64_t case_salt) {
    memset(res, 0, sizeof *res);
    res->outcome = BENCH_OK;
    res->check_err = 0.0;
    rng->s = ctx->seed ^ (case_salt * 0x9e3779b97f4a7c15ull);
    neat_device_synchronize(ctx->dev);
    neat_device_trim(ctx->dev);
    neat_device_reset_peak(ctx->dev);
}

void bench_end(bench_ctx *ctx, bench_result *res) {
    neat_device_set_math_mode(ctx->dev, NEAT_MATH_STRICT); /* recorded buffers keep theirs */
    neat_memory_stats ms;
    if (neat_device_memory_stats(ctx->dev, &ms) == NEAT_OK) res->peak_mem = ms.peak;
}

void bench_set_rate(bench_result *res, double work, const char *unit) {
    res->work = work;
    res->unit = unit;
    if (strcmp(unit, "us/op") == 0)
        res->rate = res->median_ms * 1e3 / work;
    else if (strcmp(unit, "GFLOP/s") == 0 || strcmp(unit, "GB/s") == 0)
        res->rate = work / (res->median_ms * 1e-3) / 1e9;
    else
        res->rate = work / (res->median_ms * 1e-3);
}

int bench_compare(bench_result *res, double got, double want, double tol) {
    double err = fabs(got - want);
    int ok = err <= tol; /* false for a NaN */
    double ratio =
        ok ? (tol > 0 ? err / tol : 0.0) : (isfinite(err) && tol > 0 ? err / tol : INFINITY);
    if (ratio > res->check_err) res->check_err = ratio;
    return ok;
}
