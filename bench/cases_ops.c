/*
 * cases_ops.c — the single-op cases of DESIGN.md's Performance table: matmul, linear+relu,
 * conv2d, maxpool, softmax, sum and add.
 *
 * Each case: random inputs, one recorded command buffer, one run, a float64 check of the
 * output (a sample of 64 elements for matmul/linear/conv, 16 whole rows for softmax, every
 * element for the exact ops), then the timed replays. Tolerances are DESIGN.md's:
 * matmul/linear/conv per element 2·K·2^-24·Σ|a||b|, softmax rtol 1e-5, sum
 * (log2 n + 1)·2^-24·Σ|x|, add and maxpool exact.
 */
#include "bench.h"
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define EPS32 0x1.0p-24
#define SAMPLES 64

/* Common ending of a case: check passed -> time it and fill the rate. */
static void time_case(bench_ctx *ctx, bench_result *res, neat_cmdbuf *cb, double work,
                      const char *unit) {
    if (res->outcome != BENCH_OK) return;
    if (!bench_ok(res, bench_time(ctx, cb, res), "timed replay")) return;
    bench_set_rate(res, work, unit);
}

/* ---- matmul: C[M,N] = A[M,K] B[K,N] ------------------------------------------------- */

static void run_matmul(bench_ctx *ctx, bench_result *res, int64_t n, uint64_t salt) {
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "%lldx%lldx%lld", (long long)n, (long long)n,
             (long long)n);
    neat_tensor *a = NULL, *b = NULL, *c = NULL;
    neat_cmdbuf *cb = NULL;
    float *ha = NULL, *hb = NULL, *hc = NULL;
    neat_status st;
    int64_t sa[2] = {n, n};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, sa, -1, 1, &a, NULL), "input a") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sa, -1, 1, &b, NULL), "input b") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sa, -1, 1, &c, NULL), "output c") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_matmul(cb, a, b, c, 1.0f, 0.0f, 0, 0), "neat_matmul") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    /* The reference is computed from the inputs as the device holds them after the run. */
    if (!(ha = bench_read_back(a, &st)) || !(hb = bench_read_back(b, &st)) ||
        !(hc = bench_read_back(c, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int s = 0; s < SAMPLES; s++) {
        int64_t i = rng64_randint(&rng, 0, n - 1), j = rng64_randint(&rng, 0, n - 1);
        double sum = 0, abs = 0;
        for (int64_t k = 0; k < n; k++) {
            double t = (double)ha[i * n + k] * hb[k * n + j];
            sum += t;
            abs += fabs(t);
        }
        if (!bench_compare(res, hc[i * n + j], sum, 2.0 * n * EPS32 * abs)) {
            bench_fail(res, "c[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)", (long long)i,
                       (long long)j, hc[i * n + j], sum, (unsigned long long)ctx->seed);
            break;
        }
    }
    time_case(ctx, res, cb, 2.0 * n * n * n, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(ha), free(hb), free(hc);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(c);
}

void bench_matmul_1024(bench_ctx *ctx, bench_result *res) { run_matmul(ctx, res, 1024, 1); }

void bench_matmul_large(bench_ctx *ctx, bench_result *res) {
    /* 8192^3 (1.1 TFLOP) on a GPU; 2048^3 on a CPU, where 8192^3 would take minutes. */
    run_matmul(ctx, res, ctx->props.backend == NEAT_BACKEND_CPU ? 2048 : 8192, 2);
}

/* ---- linear_relu_1024: Y = relu(X W^T + b), X, W 1024x1024 ------------------------------ */

void bench_linear_relu_1024(bench_ctx *ctx, bench_result *res) {
    const int64_t n = 1024;
    rng64 rng;
    bench_begin(ctx, res, &rng, 3);
    snprintf(res->shape, sizeof res->shape, "X %lldx%lld, W %lldx%lld", (long long)n, (long long)n,
             (long long)n, (long long)n);
    neat_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hw = NULL, *hb = NULL, *hy = NULL;
    neat_status st;
    int64_t sm[2] = {n, n}, sb[1] = {n};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &w, NULL), "input w") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 1, sb, -1, 1, &b, NULL), "input b") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_linear_forward(cb, NEAT_ACT_RELU, x, w, b, y), "neat_linear_forward") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hw = bench_read_back(w, &st)) ||
        !(hb = bench_read_back(b, &st)) || !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int s = 0; s < SAMPLES; s++) {
        int64_t i = rng64_randint(&rng, 0, n - 1), j = rng64_randint(&rng, 0, n - 1);
        double sum = hb[j], abs = fabs(hb[j]);
        for (int64_t k = 0; k < n; k++) {
            double t = (double)hx[i * n + k] * hw[j * n + k];
            sum += t;
            abs += fabs(t);
        }
        double want = sum > 0 ? sum : 0; /* relu is 1-Lipschitz: the same bound holds */
        if (!bench_compare(res, hy[i * n + j], want, 2.0 * (n + 1) * EPS32 * abs)) {
            bench_fail(res, "y[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)", (long long)i,
                       (long long)j, hy[i * n + j], want, (unsigned long long)ctx->seed);
            break;
        }
    }
    time_case(ctx, res, cb, 2.0 * n * n * n, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(hx), free(hw), free(hb), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(b), neat_tensor_destroy(y);
}

/* ---- conv2d_256f: x [32,64,56,56], w [256,64,3,3], stride 1, pad 1, no bias ------------- */

void bench_conv2d_256f(bench_ctx *ctx, bench_result *res) {
    const int64_t N = 32, C = 64, H = 56, W = 56, K = 256, R = 3, S = 3;
    rng64 rng;
    bench_begin(ctx, res, &rng, 4);
    snprintf(res->shape, sizeof res->shape, "x 32x64x56x56, w 256x64x3x3, pad 1");
    neat_tensor *x = NULL, *w = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hw = NULL, *hy = NULL;
    neat_status st;
    int64_t sx[4] = {N, C, H, W}, sw[4] = {K, C, R, S}, sy[4] = {N, K, H, W};
    neat_conv2d_desc desc = neat_conv2d_desc_make(R, S, 1, 1);
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 4, sx, -1, 1, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 4, sw, -1, 1, &w, NULL), "input w") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 4, sy, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_conv2d_forward(cb, &desc, NEAT_ACT_NONE, x, w, NULL, y),
                  "neat_conv2d_forward") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hw = bench_read_back(w, &st)) ||
        !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int s = 0; s < SAMPLES; s++) {
        int64_t n = rng64_randint(&rng, 0, N - 1), k = rng64_randint(&rng, 0, K - 1);
        int64_t p = rng64_randint(&rng, 0, H - 1), q = rng64_randint(&rng, 0, W - 1);
        double sum = 0, abs = 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t t = 0; t < S; t++) {
                    int64_t ih = p + r - 1, iw = q + t - 1;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                    double v = (double)hx[((n * C + c) * H + ih) * W + iw] *
                               hw[((k * C + c) * R + r) * S + t];
                    sum += v;
                    abs += fabs(v);
                }
        float got = hy[((n * K + k) * H + p) * W + q];
        if (!bench_compare(res, got, sum, 2.0 * C * R * S * EPS32 * abs)) {
            bench_fail(res, "y[%lld,%lld,%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)",
                       (long long)n, (long long)k, (long long)p, (long long)q, got, sum,
                       (unsigned long long)ctx->seed);
            break;
        }
    }
    time_case(ctx, res, cb, 2.0 * N * K * H * W * C * R * S, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(hx), free(hw), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(y);
}

/* ---- maxpool2x2_32x256x56: 2x2 stride 2, every output checked (exact) ------------------- */

void bench_maxpool2x2(bench_ctx *ctx, bench_result *res) {
    const int64_t N = 32, C = 256, H = 56, W = 56, P = 28, Q = 28;
    rng64 rng;
    bench_begin(ctx, res, &rng, 5);
    snprintf(res->shape, sizeof res->shape, "32x256x56x56 -> 32x256x28x28");
    neat_tensor *x = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hy = NULL;
    neat_status st;
    int64_t sx[4] = {N, C, H, W}, sy[4] = {N, C, P, Q};
    neat_pool2d_desc desc = {2, 2, 2, 2, 0, 0};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 4, sx, -1, 1, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 4, sy, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_maxpool2d(cb, &desc, x, y), "neat_maxpool2d") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int64_t nc = 0; nc < N * C && res->outcome == BENCH_OK; nc++)
        for (int64_t p = 0; p < P; p++)
            for (int64_t q = 0; q < Q; q++) {
                const float *w = hx + (nc * H + 2 * p) * W + 2 * q;
                float m = fmaxf(fmaxf(w[0], w[1]), fmaxf(w[W], w[W + 1]));
                float got = hy[(nc * P + p) * Q + q];
                if (!bench_compare(res, got, m, 0.0)) {
                    bench_fail(res, "y[%lld,%lld,%lld] = %.9g, want %.9g", (long long)nc,
                               (long long)p, (long long)q, got, m);
                    break;
                }
            }
    time_case(ctx, res, cb, 4.0 * (N * C * H * W + N * C * P * Q), "GB/s");
done:
    bench_end(ctx, res);
    free(hx), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

/* ---- softmax_rows_4096: 16 whole rows checked, rtol 1e-5 --------------------------------- */

void bench_softmax_rows_4096(bench_ctx *ctx, bench_result *res) {
    const int64_t n = 4096;
    rng64 rng;
    bench_begin(ctx, res, &rng, 6);
    snprintf(res->shape, sizeof res->shape, "4096x4096, rows");
    neat_tensor *x = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hy = NULL;
    neat_status st;
    int64_t s2[2] = {n, n};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -4, 4, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_softmax(cb, x, y), "neat_softmax") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    double want_row[4096];
    for (int s = 0; s < 16 && res->outcome == BENCH_OK; s++) {
        int64_t i = rng64_randint(&rng, 0, n - 1);
        for (int64_t j = 0; j < n; j++) want_row[j] = hx[i * n + j];
        ref_softmax(want_row, want_row, 1, n); /* tests/reference.c, in place */
        for (int64_t j = 0; j < n; j++) {
            double want = want_row[j];
            if (!bench_compare(res, hy[i * n + j], want, 1e-5 * want)) {
                bench_fail(res, "y[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)",
                           (long long)i, (long long)j, hy[i * n + j], want,
                           (unsigned long long)ctx->seed);
                break;
            }
        }
    }
    time_case(ctx, res, cb, 2.0 * 4.0 * n * n, "GB/s");
done:
    bench_end(ctx, res);
    free(hx), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

/* ---- sum_all_4096 ----------------------------------------------------------------------- */

void bench_sum_all_4096(bench_ctx *ctx, bench_result *res) {
    const int64_t n = 4096;
    rng64 rng;
    bench_begin(ctx, res, &rng, 7);
    snprintf(res->shape, sizeof res->shape, "4096x4096 -> 1");
    neat_tensor *x = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, got = 0;
    neat_status st;
    int64_t s2[2] = {n, n}, s1[1] = {1};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 1, s1, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_sum_all(cb, x, y), "neat_sum_all") ||
        !bench_ok(res, bench_run_once(cb), "first run") ||
        !bench_ok(res, neat_tensor_read(y, &got, 1), "read back"))
        goto done;
    if (!(hx = bench_read_back(x, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    double sum = 0, abs = 0;
    for (int64_t i = 0; i < n * n; i++) sum += hx[i], abs += fabs(hx[i]);
    if (!bench_compare(res, got, sum, (log2((double)n * n) + 1) * EPS32 * abs))
        bench_fail(res, "sum = %.9g, float64 reference %.9g (seed %llu)", got, sum,
                   (unsigned long long)ctx->seed);
    time_case(ctx, res, cb, 4.0 * n * n + 4.0, "GB/s");
done:
    bench_end(ctx, res);
    free(hx);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

/* ---- add_4096: out = a + b, every element checked (exact) --------------------------------- */

void bench_add_4096(bench_ctx *ctx, bench_result *res) {
    const int64_t n = 4096;
    rng64 rng;
    bench_begin(ctx, res, &rng, 8);
    snprintf(res->shape, sizeof res->shape, "4096x4096 + 4096x4096");
    neat_tensor *a = NULL, *b = NULL, *c = NULL;
    neat_cmdbuf *cb = NULL;
    float *ha = NULL, *hb = NULL, *hc = NULL;
    neat_status st;
    int64_t s2[2] = {n, n};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &a, NULL), "input a") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &b, NULL), "input b") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, s2, -1, 1, &c, NULL), "output") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_add(cb, a, b, c), "neat_add") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(ha = bench_read_back(a, &st)) || !(hb = bench_read_back(b, &st)) ||
        !(hc = bench_read_back(c, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int64_t i = 0; i < n * n; i++) {
        float want = ha[i] + hb[i];
        if (!bench_compare(res, hc[i], want, 0.0)) {
            bench_fail(res, "out[%lld] = %.9g, want %.9g", (long long)i, hc[i], want);
            break;
        }
    }
    time_case(ctx, res, cb, 3.0 * 4.0 * n * n, "GB/s");
done:
    bench_end(ctx, res);
    free(ha), free(hb), free(hc);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(c);
}
