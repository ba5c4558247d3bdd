/*
 * cases_runtime.c — what the runtime itself costs a training loop.
 *
 * destroy_during_replay: a matmul is committed (2048^3 on a CPU, 8192^3 on a GPU: tens of
 * milliseconds), and while it runs the host creates and destroys a 4 MiB tensor and
 * destroys an idle one. Before 0.2 each destroy waited for the device; now a destroy never
 * waits (memory a submission uses is held by it), so the median of those calls is
 * microseconds against the matmul's milliseconds. Reported: microseconds per create+destroy
 * pair (median, host clock), the matmul's device time beside it as median_ms.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_destroy_during_replay(bench_ctx *ctx, bench_result *res) {
    const int64_t n = ctx->props.backend == NEAT_BACKEND_CPU ? 2048 : 8192;
    enum { ROUNDS = 20 };
    rng64 rng;
    bench_begin(ctx, res, &rng, 21);
    snprintf(res->shape, sizeof res->shape, "create+destroy 4 MiB during a %lld^3 matmul",
             (long long)n);
    neat_tensor *a = NULL, *b = NULL, *c = NULL;
    neat_cmdbuf *cb = NULL;
    int64_t s2[2] = {n, n}, s1[1] = {1 << 20};
    double us[ROUNDS], dev_ms[ROUNDS];
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &a, NULL), "input a") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &b, NULL), "input b") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &c, NULL), "output") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_matmul(cb, a, b, c, 1, 0, 0, 0), "neat_matmul") ||
        !bench_ok(res, bench_run_once(cb), "first run") ||
        !bench_ok(res, bench_run_once(cb), "second run"))
        goto done;
    for (int r = 0; r < ROUNDS; r++) {
        neat_tensor *idle = NULL, *fresh = NULL;
        if (!bench_ok(res, neat_tensor_create(ctx->dev, 1, s1, &idle), "idle tensor") ||
            !bench_ok(res, neat_cmdbuf_commit(cb), "commit"))
            goto done;
        double t0 = now_us();
        neat_status st = neat_tensor_create(ctx->dev, 1, s1, &fresh);
        neat_tensor_destroy(fresh);
        neat_tensor_destroy(idle);
        us[r] = now_us() - t0;
        double dev_s = 0;
        if (!bench_ok(res, st, "neat_tensor_create") ||
            !bench_ok(res, neat_cmdbuf_wait(cb), "wait") ||
            !bench_ok(res, neat_cmdbuf_device_time(cb, &dev_s), "device time"))
            goto done;
        dev_ms[r] = 1e3 * dev_s;
    }
    qsort(us, ROUNDS, sizeof us[0], cmp);
    qsort(dev_ms, ROUNDS, sizeof dev_ms[0], cmp);
    res->median_ms = dev_ms[ROUNDS / 2];
    res->wall_ms = us[ROUNDS / 2] * 1e-3;
    res->work = 1;
    res->unit = "us";
    res->rate = us[ROUNDS / 2];
done:
    bench_end(ctx, res);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(c);
}
