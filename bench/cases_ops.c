/*
 * cases_ops.c — the single-op cases of DESIGN.md's Performance table: matmul, linear+relu,
 * conv2d, maxpool, softmax, sum and add.
 *
 * Each case: random inputs, one recorded command buffer, one run, a float64 check of the
 * output (a sample of 64 elements for matmul/linear/conv, 16 whole rows for softmax, every
 * element for the exact ops), then the timed replays. Tolerances are DESIGN.md's:
 * matmul/linear/conv per element 2·K·2^-24·Σ|a||b|, softmax rtol 1e-5, sum
 * (log2 n + 1)·2^-24·Σ|x|, add and maxpool exact.
 *
 * The bf16/f16 variants (issue 14) run the same work on half tensors: the reference is
 * computed from the inputs read back (already rounded to the type), the float32 bound above
 * covers the sum (the header promises float32 products and accumulation), and the output's
 * one rounding adds u = 2^-8 (bf16) or 2^-11 (f16) of its size. The TF32 variants (issue
 * 13; GPU only) add 2^-9·Σ|a||b| per element (both factors rounded to TF32's 10-bit
 * mantissa, truncation allowed) and the tests' relative RMS bound 2e-3 over the samples.
 */
#include "bench.h"
#include "reference.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS32 0x1.0p-24
#define SAMPLES 64

/* Common ending of a case: check passed -> time it and fill the rate. */
static void time_case(bench_ctx *ctx, bench_result *res, neat_cmdbuf *cb, double work,
                      const char *unit) {
    if (res->outcome != BENCH_OK) return;
    if (!bench_ok(res, bench_time(ctx, cb, res), "timed replay")) return;
    bench_set_rate(res, work, unit);
}

/* Bound on |got - want| for one output of a k-term product sum whose terms' absolute values
 * sum to abs: float32 accumulation, TF32 rounding of the factors, then the output's rounding
 * to dt (float32 outputs keep the float32 cases' bound unchanged). */
static double gemm_tol(neat_dtype dt, neat_math_mode math, int64_t k, double abs, double want) {
    double acc = 2.0 * (double)k * EPS32 * abs;
    if (math == NEAT_MATH_TF32) acc += 0x1.0p-9 * abs;
    return dt == NEAT_F32 ? acc : acc + bench_roundoff(dt) * (fabs(want) + acc);
}

/* The TF32 cases' second check: RMS error over the samples <= 2e-3 of the RMS reference
 * (the tests' TF32 bound), so that a bound this loose per element still catches a bias. */
static void tf32_rms_check(bench_result *res, neat_math_mode math, double err2, double want2,
                           uint64_t seed) {
    if (math != NEAT_MATH_TF32 || res->outcome != BENCH_OK) return;
    if (!bench_compare(res, sqrt(err2), 0.0, 2e-3 * sqrt(want2)))
        bench_fail(res, "TF32 relative RMS error %.3g over the samples, bound 2e-3 (seed %llu)",
                   sqrt(err2 / want2), (unsigned long long)seed);
}

/* ", bf16", ", f16", ", tf32" or "": the suffix of the shape string. */
static const char *variant(neat_dtype dt, neat_math_mode math) {
    if (math == NEAT_MATH_TF32) return ", tf32";
    return dt == NEAT_F32 ? "" : dt == NEAT_BF16 ? ", bf16" : ", f16";
}

/* ---- matmul: C[M,N] = A[M,K] B[K,N] ------------------------------------------------- */

static void run_matmul(bench_ctx *ctx, bench_result *res, int64_t n, uint64_t salt, neat_dtype dt,
                       neat_math_mode math) {
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "%lldx%lldx%lld%s", (long long)n, (long long)n,
             (long long)n, variant(dt, math));
    neat_tensor *a = NULL, *b = NULL, *c = NULL;
    neat_cmdbuf *cb = NULL;
    float *ha = NULL, *hb = NULL, *hc = NULL;
    neat_status st;
    int64_t sa[2] = {n, n};
    if (!bench_math(ctx, res, math) ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, sa, -1, 1, &a, NULL),
                  "input a") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, sa, -1, 1, &b, NULL),
                  "input b") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, sa, -1, 1, &c, NULL),
                  "output c") ||
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
    double err2 = 0, want2 = 0;
    for (int s = 0; s < SAMPLES; s++) {
        int64_t i = rng64_randint(&rng, 0, n - 1), j = rng64_randint(&rng, 0, n - 1);
        double sum = 0, abs = 0;
        for (int64_t k = 0; k < n; k++) {
            double t = (double)ha[i * n + k] * hb[k * n + j];
            sum += t;
            abs += fabs(t);
        }
        err2 += (hc[i * n + j] - sum) * (hc[i * n + j] - sum), want2 += sum * sum;
        if (!bench_compare(res, hc[i * n + j], sum, gemm_tol(dt, math, n, abs, sum))) {
            bench_fail(res, "c[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)", (long long)i,
                       (long long)j, hc[i * n + j], sum, (unsigned long long)ctx->seed);
            break;
        }
    }
    tf32_rms_check(res, math, err2, want2, ctx->seed);
    time_case(ctx, res, cb, 2.0 * n * n * n, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(ha), free(hb), free(hc);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(c);
}

/* 8192^3 (1.1 TFLOP) on a GPU; 2048^3 on a CPU, where 8192^3 would take minutes. */
static int64_t large_n(const bench_ctx *ctx) {
    return ctx->props.backend == NEAT_BACKEND_CPU ? 2048 : 8192;
}

void bench_matmul_1024(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, 1024, 1, NEAT_F32, NEAT_MATH_STRICT);
}
void bench_matmul_large(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, large_n(ctx), 2, NEAT_F32, NEAT_MATH_STRICT);
}
void bench_matmul_1024_bf16(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, 1024, 11, NEAT_BF16, NEAT_MATH_STRICT);
}
void bench_matmul_large_bf16(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, large_n(ctx), 12, NEAT_BF16, NEAT_MATH_STRICT);
}
void bench_matmul_large_f16(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, large_n(ctx), 13, NEAT_F16, NEAT_MATH_STRICT);
}
void bench_matmul_1024_tf32(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, 1024, 14, NEAT_F32, NEAT_MATH_TF32);
}
void bench_matmul_large_tf32(bench_ctx *ctx, bench_result *res) {
    run_matmul(ctx, res, large_n(ctx), 15, NEAT_F32, NEAT_MATH_TF32);
}

/* ---- linear: Y = act(X W^T + b), X, W 1024x1024 ---------------------------------------- */

/* act(z) in float64; gelu is the tanh form the header documents (F.gelu approximate='tanh'). */
static double act_ref(neat_activation act, double z) {
    if (act == NEAT_ACT_RELU) return z > 0 ? z : 0;
    if (act == NEAT_ACT_GELU)
        return 0.5 * z *
               (1 + tanh(0.7978845608028654 * (z + 0.044715 * z * z * z))); /* sqrt(2/pi) */
    return z;
}

/* The bound of gemm_tol through act: relu is 1-Lipschitz, gelu 1.13-Lipschitz, and a float32
 * gelu adds its own rounding (the tests' terms: 1e-5 relative + 4 ulp of 1 + |z|). */
static double act_tol(neat_activation act, double tol, double z, double want) {
    if (act != NEAT_ACT_GELU) return tol;
    return 1.13 * tol + 1e-5 * fabs(want) + 4 * EPS32 * (1 + fabs(z));
}

static void run_linear(bench_ctx *ctx, bench_result *res, uint64_t salt, neat_activation act,
                       neat_math_mode math) {
    const int64_t n = 1024;
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "X %lldx%lld, W %lldx%lld%s%s", (long long)n,
             (long long)n, (long long)n, (long long)n, act == NEAT_ACT_GELU ? ", gelu tanh" : "",
             variant(NEAT_F32, math));
    neat_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hw = NULL, *hb = NULL, *hy = NULL;
    neat_status st;
    int64_t sm[2] = {n, n}, sb[1] = {n};
    if (!bench_math(ctx, res, math) ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &x, NULL), "input x") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &w, NULL), "input w") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 1, sb, -1, 1, &b, NULL), "input b") ||
        !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sm, -1, 1, &y, NULL), "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_linear_forward(cb, act, x, w, b, y), "neat_linear_forward") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hw = bench_read_back(w, &st)) ||
        !(hb = bench_read_back(b, &st)) || !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    double err2 = 0, want2 = 0;
    for (int s = 0; s < SAMPLES; s++) {
        int64_t i = rng64_randint(&rng, 0, n - 1), j = rng64_randint(&rng, 0, n - 1);
        double sum = hb[j], abs = fabs(hb[j]);
        for (int64_t k = 0; k < n; k++) {
            double t = (double)hx[i * n + k] * hw[j * n + k];
            sum += t;
            abs += fabs(t);
        }
        double want = act_ref(act, sum), got = hy[i * n + j];
        double tol = act_tol(act, gemm_tol(NEAT_F32, math, n + 1, abs, want), sum, want);
        err2 += (got - want) * (got - want), want2 += want * want;
        if (!bench_compare(res, got, want, tol)) {
            bench_fail(res, "y[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)", (long long)i,
                       (long long)j, got, want, (unsigned long long)ctx->seed);
            break;
        }
    }
    tf32_rms_check(res, math, err2, want2, ctx->seed);
    time_case(ctx, res, cb, 2.0 * n * n * n, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(hx), free(hw), free(hb), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(b), neat_tensor_destroy(y);
}

void bench_linear_relu_1024(bench_ctx *ctx, bench_result *res) {
    run_linear(ctx, res, 3, NEAT_ACT_RELU, NEAT_MATH_STRICT);
}
void bench_linear_gelu_1024(bench_ctx *ctx, bench_result *res) {
    run_linear(ctx, res, 16, NEAT_ACT_GELU, NEAT_MATH_STRICT);
}
void bench_linear_relu_1024_tf32(bench_ctx *ctx, bench_result *res) {
    run_linear(ctx, res, 17, NEAT_ACT_RELU, NEAT_MATH_TF32);
}

/* ---- conv2d_256f: x [32,64,56,56], w [256,64,3,3], stride 1, pad 1 ------------------- */

/* nhwc: x [32,56,56,64], w [256,3,3,64], y [32,56,56,256] (NEAT_LAYOUT_NHWC) */
static void run_conv(bench_ctx *ctx, bench_result *res, uint64_t salt, neat_dtype dt,
                     neat_math_mode math, int bias, neat_activation act, int nhwc) {
    const int64_t N = 32, C = 64, H = 56, W = 56, K = 256, R = 3, S = 3;
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "x 32x64x56x56, w 256x64x3x3, pad 1%s%s%s",
             bias ? ", bias, relu" : "", variant(dt, math), nhwc ? ", NHWC" : "");
    neat_tensor *x = NULL, *w = NULL, *b = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hw = NULL, *hb = NULL, *hy = NULL;
    neat_status st;
    int64_t sx[4] = {N, C, H, W}, sw[4] = {K, C, R, S}, sb[1] = {K}, sy[4] = {N, K, H, W};
    neat_conv2d_desc desc = neat_conv2d_desc_make(R, S, 1, 1);
    if (nhwc) {
        desc.layout = NEAT_LAYOUT_NHWC;
        sx[1] = H, sx[2] = W, sx[3] = C, sw[1] = R, sw[2] = S, sw[3] = C;
        sy[1] = H, sy[2] = W, sy[3] = K;
    }
    if (!bench_math(ctx, res, math) ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 4, sx, -1, 1, &x, NULL),
                  "input x") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 4, sw, -1, 1, &w, NULL),
                  "input w") ||
        (bias && !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 1, sb, -1, 1, &b, NULL),
                           "input b")) ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 4, sy, -1, 1, &y, NULL),
                  "output y") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create") ||
        !bench_ok(res, neat_conv2d_forward(cb, &desc, act, x, w, b, y), "neat_conv2d_forward") ||
        !bench_ok(res, bench_run_once(cb), "first run"))
        goto done;
    if (!(hx = bench_read_back(x, &st)) || !(hw = bench_read_back(w, &st)) ||
        (bias && !(hb = bench_read_back(b, &st))) || !(hy = bench_read_back(y, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    double err2 = 0, want2 = 0;
    for (int s = 0; s < SAMPLES; s++) {
        int64_t n = rng64_randint(&rng, 0, N - 1), k = rng64_randint(&rng, 0, K - 1);
        int64_t p = rng64_randint(&rng, 0, H - 1), q = rng64_randint(&rng, 0, W - 1);
        double sum = bias ? hb[k] : 0, abs = bias ? fabs(hb[k]) : 0;
        for (int64_t c = 0; c < C; c++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t t = 0; t < S; t++) {
                    int64_t ih = p + r - 1, iw = q + t - 1;
                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                    double v = nhwc ? (double)hx[((n * H + ih) * W + iw) * C + c] *
                                          hw[((k * R + r) * S + t) * C + c]
                                    : (double)hx[((n * C + c) * H + ih) * W + iw] *
                                          hw[((k * C + c) * R + r) * S + t];
                    sum += v;
                    abs += fabs(v);
                }
        double want = act_ref(act, sum); /* none or relu: the bound holds through it */
        float got = nhwc ? hy[((n * H + p) * W + q) * K + k] : hy[((n * K + k) * H + p) * W + q];
        err2 += (got - want) * (got - want), want2 += want * want;
        if (!bench_compare(res, got, want, gemm_tol(dt, math, C * R * S + bias, abs, want))) {
            bench_fail(res, "y[%lld,%lld,%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)",
                       (long long)n, (long long)k, (long long)p, (long long)q, got, want,
                       (unsigned long long)ctx->seed);
            break;
        }
    }
    tf32_rms_check(res, math, err2, want2, ctx->seed);
    time_case(ctx, res, cb, 2.0 * N * K * H * W * C * R * S, "GFLOP/s");
done:
    bench_end(ctx, res);
    free(hx), free(hw), free(hb), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(w), neat_tensor_destroy(b), neat_tensor_destroy(y);
}

void bench_conv2d_256f(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 4, NEAT_F32, NEAT_MATH_STRICT, 0, NEAT_ACT_NONE, 0);
}
void bench_conv2d_256f_nhwc(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 4, NEAT_F32, NEAT_MATH_STRICT, 0, NEAT_ACT_NONE, 1);
}
void bench_conv2d_256f_bf16(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 18, NEAT_BF16, NEAT_MATH_STRICT, 0, NEAT_ACT_NONE, 0);
}
void bench_conv2d_256f_bf16_nhwc(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 18, NEAT_BF16, NEAT_MATH_STRICT, 0, NEAT_ACT_NONE, 1);
}
void bench_conv2d_256f_tf32(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 19, NEAT_F32, NEAT_MATH_TF32, 0, NEAT_ACT_NONE, 0);
}
void bench_conv2d_bias_relu_256f(bench_ctx *ctx, bench_result *res) {
    run_conv(ctx, res, 20, NEAT_F32, NEAT_MATH_STRICT, 1, NEAT_ACT_RELU, 0);
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
    neat_pool2d_desc desc = neat_pool2d_desc_make(2, 2, 2, 0);
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

/* ---- softmax_rows_4096: 16 whole rows checked, rtol 1e-5 (+ the output's rounding) ------- */

static void run_softmax(bench_ctx *ctx, bench_result *res, uint64_t salt, neat_dtype dt) {
    const int64_t n = 4096;
    /* float32's 1e-5, then the rounding to dt of a value already off by that much */
    const double rtol = dt == NEAT_F32 ? 1e-5 : 1e-5 + bench_roundoff(dt) * (1 + 1e-5);
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "4096x4096, rows%s", variant(dt, NEAT_MATH_STRICT));
    neat_tensor *x = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, *hy = NULL;
    neat_status st;
    int64_t s2[2] = {n, n};
    if (!bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -4, 4, &x, NULL),
                  "input x") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -1, 1, &y, NULL),
                  "output y") ||
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
            if (!bench_compare(res, hy[i * n + j], want, rtol * want)) {
                bench_fail(res, "y[%lld,%lld] = %.9g, float64 reference %.9g (seed %llu)",
                           (long long)i, (long long)j, hy[i * n + j], want,
                           (unsigned long long)ctx->seed);
                break;
            }
        }
    }
    time_case(ctx, res, cb, 2.0 * (double)neat_dtype_size(dt) * n * n, "GB/s");
done:
    bench_end(ctx, res);
    free(hx), free(hy);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

void bench_softmax_rows_4096(bench_ctx *ctx, bench_result *res) {
    run_softmax(ctx, res, 6, NEAT_F32);
}
void bench_softmax_rows_4096_bf16(bench_ctx *ctx, bench_result *res) {
    run_softmax(ctx, res, 21, NEAT_BF16);
}

/* ---- sum_all_4096: the sum in float32, rounded once to the output's type -------------- */

static void run_sum_all(bench_ctx *ctx, bench_result *res, uint64_t salt, neat_dtype dt) {
    const int64_t n = 4096;
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "4096x4096 -> 1%s", variant(dt, NEAT_MATH_STRICT));
    neat_tensor *x = NULL, *y = NULL;
    neat_cmdbuf *cb = NULL;
    float *hx = NULL, got = 0;
    neat_status st;
    int64_t s2[2] = {n, n}, s1[1] = {1};
    if (!bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -1, 1, &x, NULL),
                  "input x") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 1, s1, -1, 1, &y, NULL),
                  "output y") ||
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
    double tol = (log2((double)n * n) + 1) * EPS32 * abs;
    if (dt != NEAT_F32) tol += bench_roundoff(dt) * (fabs(sum) + tol);
    if (!bench_compare(res, got, sum, tol))
        bench_fail(res, "sum = %.9g, float64 reference %.9g (seed %llu)", got, sum,
                   (unsigned long long)ctx->seed);
    double size = (double)neat_dtype_size(dt);
    time_case(ctx, res, cb, size * n * n + size, "GB/s");
done:
    bench_end(ctx, res);
    free(hx);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x), neat_tensor_destroy(y);
}

void bench_sum_all_4096(bench_ctx *ctx, bench_result *res) { run_sum_all(ctx, res, 7, NEAT_F32); }
void bench_sum_all_4096_bf16(bench_ctx *ctx, bench_result *res) {
    run_sum_all(ctx, res, 22, NEAT_BF16);
}

/* x rounded to bf16 (to nearest, ties to even; no NaN here), back in a float. */
static float round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u = (u + 0x7fffu + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ---- add_4096: out = a + b, every element checked (exact: a float32 sum, rounded once) -- */

static void run_add(bench_ctx *ctx, bench_result *res, uint64_t salt, neat_dtype dt) {
    const int64_t n = 4096;
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "4096x4096 + 4096x4096%s",
             variant(dt, NEAT_MATH_STRICT));
    neat_tensor *a = NULL, *b = NULL, *c = NULL;
    neat_cmdbuf *cb = NULL;
    float *ha = NULL, *hb = NULL, *hc = NULL;
    neat_status st;
    int64_t s2[2] = {n, n};
    if (!bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -1, 1, &a, NULL),
                  "input a") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -1, 1, &b, NULL),
                  "input b") ||
        !bench_ok(res, bench_random_tensor_typed(ctx, &rng, dt, 2, s2, -1, 1, &c, NULL),
                  "output") ||
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
        if (dt == NEAT_BF16) want = round_bf16(want);
        /* (f16 has no case here: its sums would need an f16 rounding on the host) */
        if (!bench_compare(res, hc[i], want, 0.0)) {
            bench_fail(res, "out[%lld] = %.9g, want %.9g", (long long)i, hc[i], want);
            break;
        }
    }
    time_case(ctx, res, cb, 3.0 * (double)neat_dtype_size(dt) * n * n, "GB/s");
done:
    bench_end(ctx, res);
    free(ha), free(hb), free(hc);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(a), neat_tensor_destroy(b), neat_tensor_destroy(c);
}

void bench_add_4096(bench_ctx *ctx, bench_result *res) { run_add(ctx, res, 8, NEAT_F32); }
void bench_add_4096_bf16(bench_ctx *ctx, bench_result *res) { run_add(ctx, res, 23, NEAT_BF16); }
