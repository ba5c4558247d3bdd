/*
 * cases_models.c — the two whole-program cases: mlp_700_small_ops (per-op overhead of a
 * recorded command buffer) and lenet_train_step_b128 (one recorded SGD training step).
 *
 * mlp_700_small_ops: x [64,256]; 100 times: three times (h = x W_l^T + b_l; h = relu(h)),
 * then x = 0.5 h. That is 700 ops (linear, relu and scale are separate ops on purpose: the
 * case measures what one op costs), recorded once into one command buffer and replayed;
 * the three layers' weights are shared by the 100 repetitions. Weights and biases are
 * U(-1/16, 1/16) (PyTorch's Linear default) and the scale 0.5, so the chain contracts to a
 * bias-driven fixed point of size ~0.03: no overflow, no denormals. Rows of the batch are
 * independent, so the check recomputes 4 rows in float64 through all 700 ops.
 *
 * lenet_train_step_b128: conv(1->32,3x3,pad1)+relu, maxpool2, conv(32->64,3x3,pad1)+relu,
 * maxpool2, view [N,3136], linear(3136->128)+relu, linear(128->10), softmax cross-entropy,
 * the backward of all of it and SGD (momentum 0.9, lr 0.01 in `hyper`) on the 8 parameter
 * tensors: 22 ops in one buffer, replayed (each replay is one more training step on the
 * same batch). The check after the first step: the loss against a float64 forward of all
 * 128 images, the updated fc2 weights and bias against W - lr·g with g computed in float64,
 * and every parameter finite, conv1's weights moved (the gradient reached the first layer).
 * lenet_train_step_b1024 is the same step at batch 1024 (its check over all 1024 images).
 * lenet_train_step_b128_bf16 and _b1024_bf16: the same step in bf16 mixed precision (float32
 * master weights and momentum, bf16 copies, activations and gradients, the loss in float32,
 * neat_sgd_update_mixed), checked against the same float64 step with bf16's tolerances.
 */
#include "bench.h"
#include "reference.h"
#include "reference_train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EPS32 0x1.0p-24

/* ---- mlp_700_small_ops ---------------------------------------------------------------- */

void bench_mlp_700_small_ops(bench_ctx *ctx, bench_result *res) {
    enum { B = 64, D = 256, REPEAT = 100, LAYERS = 3, CHECK_ROWS = 4 };
    const float alpha = 0.5f, bound = 1.0f / 16.0f;
    rng64 rng;
    bench_begin(ctx, res, &rng, 9);
    snprintf(res->shape, sizeof res->shape,
             "100 x (3 x (linear 256->256 + relu) + scale), batch 64");
    neat_tensor *x = NULL, *h[LAYERS] = {0}, *w[LAYERS] = {0}, *b[LAYERS] = {0};
    float *hx0 = NULL, *hw[LAYERS] = {0}, *hb[LAYERS] = {0}, *hout = NULL;
    neat_cmdbuf *cb = NULL;
    neat_status st;
    int64_t sx[2] = {B, D}, sw[2] = {D, D}, sb[1] = {D};
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, sx, -1, 1, &x, &hx0), "input x"))
        goto done;
    for (int l = 0; l < LAYERS; l++)
        if (!bench_ok(res, bench_random_tensor(ctx, &rng, 2, sw, -bound, bound, &w[l], &hw[l]),
                      "w") ||
            !bench_ok(res, bench_random_tensor(ctx, &rng, 1, sb, -bound, bound, &b[l], &hb[l]),
                      "b") ||
            !bench_ok(res, bench_random_tensor(ctx, &rng, 2, sx, -1, 1, &h[l], NULL), "h"))
            goto done;
    if (!bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create")) goto done;
    for (int r = 0; r < REPEAT; r++) {
        const neat_tensor *in = x;
        for (int l = 0; l < LAYERS; l++) {
            if (!bench_ok(res, neat_linear_forward(cb, NEAT_ACT_NONE, in, w[l], b[l], h[l]),
                          "neat_linear_forward") ||
                !bench_ok(res, neat_activation_forward(cb, NEAT_ACT_RELU, h[l], h[l]),
                          "neat_activation_forward"))
                goto done;
            in = h[l];
        }
        if (!bench_ok(res, neat_scale(cb, h[LAYERS - 1], alpha, x), "neat_scale")) goto done;
    }
    int64_t ops = 0;
    if (!bench_ok(res, neat_cmdbuf_op_count(cb, &ops), "neat_cmdbuf_op_count")) goto done;
    if (ops != 700) {
        bench_fail(res, "recorded %lld ops, expected 700", (long long)ops);
        goto done;
    }
    if (!bench_ok(res, bench_run_once(cb), "first run")) goto done;
    if (!(hout = bench_read_back(x, &st))) {
        bench_ok(res, st, "read back");
        goto done;
    }
    for (int s = 0; s < CHECK_ROWS && res->outcome == BENCH_OK; s++) {
        int64_t row = rng64_randint(&rng, 0, B - 1);
        double v[D], u[D], err_bound = 0;
        for (int j = 0; j < D; j++) v[j] = hx0[row * D + j];
        for (int r = 0; r < REPEAT; r++) {
            for (int l = 0; l < LAYERS; l++) {
                double worst = 0;
                for (int j = 0; j < D; j++) {
                    double sum = hb[l][j], abs = fabs(hb[l][j]);
                    for (int k = 0; k < D; k++) {
                        double t = (double)hw[l][j * D + k] * v[k];
                        sum += t;
                        abs += fabs(t);
                    }
                    u[j] = sum > 0 ? sum : 0;
                    worst = abs > worst ? abs : worst;
                }
                memcpy(v, u, sizeof v);
                if (r == REPEAT - 1 && l == LAYERS - 1)
                    err_bound = alpha * 2.0 * (D + 1) * EPS32 * worst;
            }
            for (int j = 0; j < D; j++) v[j] *= alpha;
        }
        /* The last layer's float32 bound, times 8 for the (contracted) errors of the
         * layers before it, plus the rounding of the final scale. */
        for (int j = 0; j < D; j++) {
            double tol = 8 * err_bound + EPS32 * fabs(v[j]);
            if (!bench_compare(res, hout[row * D + j], v[j], tol)) {
                bench_fail(res,
                           "x[%lld,%d] = %.9g after 700 ops, float64 reference %.9g "
                           "(seed %llu)",
                           (long long)row, j, hout[row * D + j], v[j],
                           (unsigned long long)ctx->seed);
                break;
            }
        }
    }
    if (res->outcome == BENCH_OK && bench_ok(res, bench_time(ctx, cb, res), "timed replay"))
        bench_set_rate(res, 700.0, "us/op");
done:
    bench_end(ctx, res);
    free(hx0), free(hout);
    neat_cmdbuf_destroy(cb);
    neat_tensor_destroy(x);
    for (int l = 0; l < LAYERS; l++) {
        free(hw[l]), free(hb[l]);
        neat_tensor_destroy(h[l]), neat_tensor_destroy(w[l]), neat_tensor_destroy(b[l]);
    }
}

/* ---- lenet_train_step_b128 ---------------------------------------------------------- */

enum { C1 = 32, C2 = 64, HID = 128, CLS = 10, FLAT = C2 * 7 * 7 };

/* x [LN,C,H,W] -> maxpool2x2(relu(conv3x3 pad 1(x, w) + b)) [LN,K,H/2,W/2] in float64, with
 * the references of tests/reference.c. */
static void ref_conv_relu_pool(int64_t LN, const double *x, int64_t C, int64_t H, int64_t W,
                               const double *w, const double *b, int64_t K, double *out) {
    ref_conv_shape conv = {.n = LN,
                           .c = C,
                           .h = H,
                           .w = W,
                           .k = K,
                           .kh = 3,
                           .kw = 3,
                           .sh = 1,
                           .sw = 1,
                           .ph = 1,
                           .pw = 1,
                           .dh = 1,
                           .dw = 1,
                           .groups = 1};
    ref_conv_shape pool = {.n = LN,
                           .c = K,
                           .h = H,
                           .w = W,
                           .k = K,
                           .kh = 2,
                           .kw = 2,
                           .sh = 2,
                           .sw = 2,
                           .dh = 1,
                           .dw = 1,
                           .groups = 1};
    double *y = malloc((size_t)(LN * K * H * W) * sizeof *y);
    ref_conv2d_forward(&conv, x, w, b, NEAT_ACT_RELU, y, NULL, NULL);
    ref_maxpool2d(&pool, y, out);
    free(y);
}

static double *to_double(const float *v, int64_t n) {
    double *d = malloc((size_t)n * sizeof *d);
    for (int64_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

typedef struct lenet_param {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t fan_in;
    neat_tensor *p, *g, *v;
    neat_tensor *h; /* mixed precision: the half copy the step reads (p is the master) */
    float *host;    /* initial values */
} lenet_param;

/* One SGD step at batch LN (128: lenet_train_step_b128, 1024: _b1024) in dt: float32, or
 * mixed precision (bf16: float32 master weights, their half copies, half activations and
 * gradients, the loss in float32 through casts, neat_sgd_update_mixed writing the copies). */
/* An NCHW [n,c,h,w] array to NHWC order (to 1), or back (to 0): the reference (NCHW) and the
 * NHWC network's tensors and filters. */
static void nhwc_permute(const double *src, double *dst, int64_t n, int64_t c, int64_t hw, int to) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = 0; k < c; k++)
            for (int64_t e = 0; e < hw; e++) {
                int64_t a = (i * c + k) * hw + e, b = (i * hw + e) * c + k;
                if (to)
                    dst[b] = src[a];
                else
                    dst[a] = src[b];
            }
}

/* nhwc: the images, activations and filters in NEAT_LAYOUT_NHWC (fc1 then reads the pooled
 * [N,7,7,64] flattened in h, w, c order; images of one channel are the same bytes). */
static void run_lenet(bench_ctx *ctx, bench_result *res, const int64_t LN, uint64_t salt,
                      neat_dtype dt, int nhwc) {
    const int half = dt != NEAT_F32;
    rng64 rng;
    bench_begin(ctx, res, &rng, salt);
    snprintf(res->shape, sizeof res->shape, "LeNet 1x28x28, batch %lld, SGD momentum 0.9%s%s",
             (long long)LN, half ? ", bf16 mixed precision" : "", nhwc ? ", NHWC" : "");
#define PARAM(n, nd, fan, ...) {.name = n, .ndim = nd, .shape = {__VA_ARGS__}, .fan_in = fan}
    lenet_param P[8] = {PARAM("conv1.w", 4, 9, C1, 1, 3, 3),       PARAM("conv1.b", 1, 9, C1),
                        PARAM("conv2.w", 4, C1 * 9, C2, C1, 3, 3), PARAM("conv2.b", 1, C1 * 9, C2),
                        PARAM("fc1.w", 2, FLAT, HID, FLAT),        PARAM("fc1.b", 1, FLAT, HID),
                        PARAM("fc2.w", 2, HID, CLS, HID),          PARAM("fc2.b", 1, HID, CLS)};
#undef PARAM
    enum {
        A1,
        P1,
        A2,
        P2,
        P2F,
        H,
        LOGITS,
        LOSS,
        DLOGITS,
        DH,
        DP2,
        DP2F,
        DA2,
        DP1,
        DA1,
        HYPER,
        LOGITS32,
        DLOGITSH,
        IMGH,
        NT
    };
    neat_tensor *t[NT] = {0}, *images = NULL, *labels = NULL;
    float *himg = NULL, *hlab = NULL, *after[8] = {0};
    double *d_p1 = NULL, *d_p2 = NULL, *d_h = NULL, *d_logits = NULL, *d_img = NULL;
    double *d_lab = NULL, *d_dlogits = NULL, *dp[8] = {0};
    neat_cmdbuf *cb = NULL;
    neat_status st;
    const float lr = 0.01f;

    int64_t s_img[4] = {LN, 1, 28, 28}, s_lab[1] = {LN};
    if (nhwc) s_img[1] = 28, s_img[3] = 1; /* [N,28,28,1]: the same bytes */
    if (!bench_ok(res, bench_random_tensor(ctx, &rng, 4, s_img, 0, 1, &images, &himg), "images"))
        goto done;
    hlab = malloc(LN * sizeof *hlab);
    for (int64_t n = 0; n < LN; n++) hlab[n] = (float)rng64_randint(&rng, 0, CLS - 1);
    if (!bench_ok(res, neat_tensor_create(ctx->dev, 1, s_lab, &labels), "labels") ||
        !bench_ok(res, neat_tensor_write(labels, hlab, LN), "labels"))
        goto done;
    if (nhwc) { /* filters [K,3,3,C] */
        int64_t w1[4] = {C1, 3, 3, 1}, w2[4] = {C2, 3, 3, C1};
        memcpy(P[0].shape, w1, sizeof w1), memcpy(P[2].shape, w2, sizeof w2);
    }
    for (int i = 0; i < 8; i++) {
        double bound = 1.0 / sqrt((double)P[i].fan_in); /* PyTorch's default init */
        int64_t n = 1;
        for (int d = 0; d < P[i].ndim; d++) n *= P[i].shape[d];
        float *zeros = calloc((size_t)n, sizeof *zeros);
        st = bench_random_tensor(ctx, &rng, P[i].ndim, P[i].shape, -bound, bound, &P[i].p,
                                 &P[i].host);
        if (st == NEAT_OK && !half)
            st = bench_random_tensor(ctx, &rng, P[i].ndim, P[i].shape, -1, 1, &P[i].g, NULL);
        if (st == NEAT_OK && half) /* written by the backward (accumulate 0) before use */
            st = neat_tensor_create_typed(ctx->dev, dt, P[i].ndim, P[i].shape, 1, &P[i].g);
        if (st == NEAT_OK && half)
            st = neat_tensor_create_typed(ctx->dev, dt, P[i].ndim, P[i].shape, 0, &P[i].h);
        if (st == NEAT_OK) st = neat_tensor_create(ctx->dev, P[i].ndim, P[i].shape, &P[i].v);
        if (st == NEAT_OK) st = neat_tensor_write(P[i].v, zeros, n); /* momentum starts at 0 */
        free(zeros);
        if (!bench_ok(res, st, P[i].name)) goto done;
    }
    struct {
        int ndim;
        int64_t shape[4];
    } ts[NT] = {[A1] = {4, {LN, C1, 28, 28}},
                [P1] = {4, {LN, C1, 14, 14}},
                [A2] = {4, {LN, C2, 14, 14}},
                [P2] = {4, {LN, C2, 7, 7}},
                [H] = {2, {LN, HID}},
                [LOGITS] = {2, {LN, CLS}},
                [LOSS] = {1, {1}},
                [DLOGITS] = {2, {LN, CLS}},
                [DH] = {2, {LN, HID}},
                [DP2] = {4, {LN, C2, 7, 7}},
                [DA2] = {4, {LN, C2, 14, 14}},
                [DP1] = {4, {LN, C1, 14, 14}},
                [DA1] = {4, {LN, C1, 28, 28}},
                [HYPER] = {1, {2}},
                [LOGITS32] = {2, {LN, CLS}},
                [DLOGITSH] = {2, {LN, CLS}},
                [IMGH] = {4, {LN, 1, 28, 28}}};
    for (int i = 0; i < NT && nhwc; i++) /* [N,C,H,W] -> [N,H,W,C] */
        if (ts[i].ndim == 4) {
            int64_t c = ts[i].shape[1];
            ts[i].shape[1] = ts[i].shape[2], ts[i].shape[2] = ts[i].shape[3], ts[i].shape[3] = c;
        }
    for (int i = 0; i < NT; i++) {
        if (i == P2F || i == DP2F) continue;
        if (i >= LOGITS32 && !half) continue;
        if (half && i != LOSS && i != DLOGITS && i != HYPER && i != LOGITS32) {
            if (!bench_ok(res,
                          neat_tensor_create_typed(ctx->dev, dt, ts[i].ndim, ts[i].shape, 1, &t[i]),
                          "activation"))
                goto done;
            continue;
        }
        if (!bench_ok(res,
                      bench_random_tensor(ctx, &rng, ts[i].ndim, ts[i].shape, -1, 1, &t[i], NULL),
                      "activation"))
            goto done;
    }
    int64_t s_flat[2] = {LN, FLAT};
    float hyper[2] = {lr, 1};
    if (!bench_ok(res, neat_tensor_view(t[P2], 2, s_flat, &t[P2F]), "neat_tensor_view") ||
        !bench_ok(res, neat_tensor_view(t[DP2], 2, s_flat, &t[DP2F]), "neat_tensor_view") ||
        !bench_ok(res, neat_tensor_write(t[HYPER], hyper, 2), "hyper") ||
        !bench_ok(res, neat_cmdbuf_create(ctx->dev, &cb), "neat_cmdbuf_create"))
        goto done;

    neat_conv2d_desc conv = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_pool2d_desc pool = neat_pool2d_desc_make(2, 2, 2, 0);
    conv.layout = pool.layout = nhwc ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
    neat_sgd_params sgd = {0.9f, 0.0f, 0};
    /* What the passes read: the half copies and images, the float32 logits of the loss, and
     * the half loss gradient; in float32 the tensors themselves. */
    neat_tensor *W[8], *X = half ? t[IMGH] : images, *L32 = half ? t[LOGITS32] : t[LOGITS];
    neat_tensor *D = half ? t[DLOGITSH] : t[DLOGITS];
    for (int i = 0; i < 8; i++) W[i] = half ? P[i].h : P[i].p;
    if (half) { /* the copies start as the masters rounded: one buffer run once */
        neat_cmdbuf *init = NULL;
        st = neat_cmdbuf_create(ctx->dev, &init);
        for (int i = 0; i < 8 && st == NEAT_OK; i++) st = neat_cast(init, P[i].p, P[i].h);
        if (st == NEAT_OK) st = bench_run_once(init);
        neat_cmdbuf_destroy(init);
        if (!bench_ok(res, st, "the half copies") ||
            !bench_ok(res, neat_cast(cb, images, X), "neat_cast"))
            goto done;
    }
    if (!bench_ok(res, neat_conv2d_forward(cb, &conv, NEAT_ACT_RELU, X, W[0], W[1], t[A1]),
                  "neat_conv2d_forward") ||
        !bench_ok(res, neat_maxpool2d(cb, &pool, t[A1], t[P1]), "neat_maxpool2d") ||
        !bench_ok(res, neat_conv2d_forward(cb, &conv, NEAT_ACT_RELU, t[P1], W[2], W[3], t[A2]),
                  "neat_conv2d_forward") ||
        !bench_ok(res, neat_maxpool2d(cb, &pool, t[A2], t[P2]), "neat_maxpool2d") ||
        !bench_ok(res, neat_linear_forward(cb, NEAT_ACT_RELU, t[P2F], W[4], W[5], t[H]),
                  "neat_linear_forward") ||
        !bench_ok(res, neat_linear_forward(cb, NEAT_ACT_NONE, t[H], W[6], W[7], t[LOGITS]),
                  "neat_linear_forward") ||
        (half && !bench_ok(res, neat_cast(cb, t[LOGITS], L32), "neat_cast")) ||
        !bench_ok(res, neat_softmax_cross_entropy(cb, L32, labels, t[LOSS]),
                  "neat_softmax_cross_entropy") ||
        !bench_ok(res, neat_softmax_cross_entropy_backward(cb, L32, labels, t[DLOGITS]),
                  "neat_softmax_cross_entropy_backward") ||
        (half && !bench_ok(res, neat_cast(cb, t[DLOGITS], D), "neat_cast")) ||
        !bench_ok(res,
                  neat_linear_backward(cb, NEAT_ACT_NONE, t[H], W[6], W[7], t[LOGITS], D, t[DH],
                                       P[6].g, P[7].g, 0),
                  "neat_linear_backward") ||
        !bench_ok(res,
                  neat_linear_backward(cb, NEAT_ACT_RELU, t[P2F], W[4], W[5], t[H], t[DH], t[DP2F],
                                       P[4].g, P[5].g, 0),
                  "neat_linear_backward") ||
        !bench_ok(res, neat_maxpool2d_backward(cb, &pool, t[A2], t[DP2], t[DA2]),
                  "neat_maxpool2d_backward") ||
        !bench_ok(res,
                  neat_conv2d_backward(cb, &conv, NEAT_ACT_RELU, t[P1], W[2], W[3], t[A2], t[DA2],
                                       t[DP1], P[2].g, P[3].g, 0),
                  "neat_conv2d_backward") ||
        !bench_ok(res, neat_maxpool2d_backward(cb, &pool, t[A1], t[DP1], t[DA1]),
                  "neat_maxpool2d_backward") ||
        !bench_ok(res,
                  neat_conv2d_backward(cb, &conv, NEAT_ACT_RELU, X, W[0], W[1], t[A1], t[DA1], NULL,
                                       P[0].g, P[1].g, 0),
                  "neat_conv2d_backward"))
        goto done;
    for (int i = 0; i < 8; i++)
        if (!bench_ok(res,
                      half ? neat_sgd_update_mixed(cb, &sgd, t[HYPER], NULL, P[i].p, P[i].g, P[i].v,
                                                   P[i].h)
                           : neat_sgd_update(cb, &sgd, t[HYPER], P[i].p, P[i].g, P[i].v),
                      "neat_sgd_update"))
            goto done;
    if (!bench_ok(res, bench_run_once(cb), "first step")) goto done;

    /* ---- check the first step ---- */
    float loss = 0;
    if (!bench_ok(res, neat_tensor_read(t[LOSS], &loss, 1), "read loss")) goto done;
    for (int i = 0; i < 8; i++)
        if (!(after[i] = bench_read_back(P[i].p, &st))) {
            bench_ok(res, st, "read back");
            goto done;
        }
    /* The float64 forward of all LN images, the loss and fc2's gradients (tests/reference*.c);
     * gabs is the same gradient over |dlogits|: fc1's output h is a relu, so |dz h| = |dz| h. */
    for (int i = 0; i < 8; i++) {
        int64_t n = 1;
        for (int d = 0; d < P[i].ndim; d++) n *= P[i].shape[d];
        dp[i] = to_double(P[i].host, n);
    }
    d_img = to_double(himg, LN * 28 * 28);
    d_lab = to_double(hlab, LN);
    d_p1 = malloc((size_t)LN * C1 * 14 * 14 * sizeof *d_p1);
    d_p2 = malloc((size_t)LN * FLAT * sizeof *d_p2);
    d_h = malloc(LN * HID * sizeof *d_h);
    d_logits = malloc(LN * CLS * sizeof *d_logits);
    d_dlogits = malloc(LN * CLS * sizeof *d_dlogits);
    if (nhwc) { /* the reference's conv2.w in [K,C,3,3]: dp[2] holds [K,3,3,C] */
        double *w2 = malloc((size_t)C2 * C1 * 9 * sizeof *w2);
        nhwc_permute(dp[2], w2, C2, C1, 9, 0);
        free(dp[2]), dp[2] = w2;
    }
    ref_conv_relu_pool(LN, d_img, 1, 28, 28, dp[0], dp[1], C1, d_p1);
    ref_conv_relu_pool(LN, d_p1, C1, 14, 14, dp[2], dp[3], C2, d_p2);
    if (nhwc) { /* fc1 reads the pooled output flattened in h, w, c order */
        double *f = malloc((size_t)LN * FLAT * sizeof *f);
        nhwc_permute(d_p2, f, LN, C2, 49, 1);
        free(d_p2), d_p2 = f;
    }
    ref_linear_forward(d_p2, dp[4], dp[5], NEAT_ACT_RELU, d_h, NULL, NULL, LN, FLAT, HID);
    ref_linear_forward(d_h, dp[6], dp[7], NEAT_ACT_NONE, d_logits, NULL, NULL, LN, HID, CLS);
    double ref_loss = ref_softmax_xent(LN, CLS, d_logits, d_lab);
    double g_w[CLS * HID], g_wabs[CLS * HID];
    double g_b[CLS], g_babs[CLS];
    ref_softmax_xent_backward(LN, CLS, d_logits, d_lab, d_dlogits);
    ref_linear_backward(d_h, dp[6], dp[7], d_logits, d_dlogits, NEAT_ACT_NONE, LN, HID, CLS, NULL,
                        g_w, g_b, 0);
    for (int64_t i = 0; i < LN * CLS; i++) d_dlogits[i] = fabs(d_dlogits[i]);
    ref_linear_backward(d_h, dp[6], dp[7], d_logits, d_dlogits, NEAT_ACT_NONE, LN, HID, CLS, NULL,
                        g_wabs, g_babs, 0);
    /* bf16: the forward reads rounded weights and images and rounds each layer's output
     * (2^-8 each, four layers deep): 3% of the loss; the gradient 25% of its absolute sum
     * (fc1's units that are nearly 0 switch relu's side under the roundings: measured up to
     * 11% on the CPU, where the sum is 1e-3 of the largest). A sign or scale error, a
     * missing term or a skipped update is far outside either. */
    double loss_tol = half ? 3e-2 : 1e-4, grad_tol = half ? 0.25 : 1e-3;
    if (!bench_compare(res, loss, ref_loss, loss_tol * fabs(ref_loss))) {
        bench_fail(res, "loss = %.9g, float64 reference %.9g (seed %llu)", loss, ref_loss,
                   (unsigned long long)ctx->seed);
        goto done;
    }
    /* First step with zero velocity: v = g, param = param - lr g. The float32 result of
     * W - lr·g carries W's rounding; the gradient is allowed 1e-3 of its absolute sum. */
    for (int i = 6; i < 8 && res->outcome == BENCH_OK; i++) {
        int64_t n = i == 6 ? CLS * HID : CLS;
        const double *g = i == 6 ? g_w : g_b, *gabs = i == 6 ? g_wabs : g_babs;
        for (int64_t e = 0; e < n; e++) {
            double want = P[i].host[e] - (double)lr * g[e];
            double tol = 2 * EPS32 * fabs(P[i].host[e]) + lr * (grad_tol * gabs[e] + 1e-9);
            if (!bench_compare(res, after[i][e], want, tol)) {
                bench_fail(res,
                           "%s[%lld] after one step = %.9g, float64 reference %.9g "
                           "(seed %llu)",
                           P[i].name, (long long)e, after[i][e], want,
                           (unsigned long long)ctx->seed);
                break;
            }
        }
    }
    for (int i = 0; i < 8 && res->outcome == BENCH_OK; i++) {
        int64_t n = 1, moved = 0;
        for (int d = 0; d < P[i].ndim; d++) n *= P[i].shape[d];
        for (int64_t e = 0; e < n; e++) {
            if (!isfinite(after[i][e])) {
                bench_fail(res, "%s[%lld] is %g after one step", P[i].name, (long long)e,
                           after[i][e]);
                break;
            }
            moved += after[i][e] != P[i].host[e];
        }
        if (i == 0 && res->outcome == BENCH_OK && moved == 0)
            bench_fail(res, "conv1.w did not change after one step: no gradient reached it");
    }
    if (res->outcome == BENCH_OK && bench_ok(res, bench_time(ctx, cb, res), "timed replay"))
        bench_set_rate(res, (double)LN, "img/s");
done:
    bench_end(ctx, res);
    neat_cmdbuf_destroy(cb);
    for (int i = 0; i < NT; i++) neat_tensor_destroy(t[i]);
    for (int i = 0; i < 8; i++) {
        neat_tensor_destroy(P[i].p), neat_tensor_destroy(P[i].g), neat_tensor_destroy(P[i].v);
        neat_tensor_destroy(P[i].h);
        free(P[i].host), free(after[i]), free(dp[i]);
    }
    neat_tensor_destroy(images), neat_tensor_destroy(labels);
    free(himg), free(hlab), free(d_img), free(d_p1), free(d_p2), free(d_h), free(d_logits);
    free(d_lab), free(d_dlogits);
}

void bench_lenet_train_step(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 128, 10, NEAT_F32, 0);
}
void bench_lenet_train_step_b1024(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 1024, 24, NEAT_F32, 0);
}
void bench_lenet_train_step_b128_bf16(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 128, 25, NEAT_BF16, 0);
}
void bench_lenet_train_step_b1024_bf16(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 1024, 26, NEAT_BF16, 0);
}
void bench_lenet_train_step_b128_nhwc(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 128, 10, NEAT_F32, 1);
}
void bench_lenet_train_step_b128_bf16_nhwc(bench_ctx *ctx, bench_result *res) {
    run_lenet(ctx, res, 128, 25, NEAT_BF16, 1);
}
