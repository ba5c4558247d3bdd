/*
 * reference_train.c — naive float64 references of the training ops (see reference_train.h).
 * Forward helpers needed here (activation derivatives, pre-activations for gelu) are static
 * and named train_*, so they never clash with tests/reference.c's forward ref_* functions.
 */
#include "reference_train.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- activations ----------------------------------------------------------------------- */

/* gelu (tanh form) = 0.5 x (1 + tanh(u)), u = s (x + c x^3), s = sqrt(2/pi), c = 0.044715;
 * d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) s (1 + 3 c x^2), t = tanh(u). */
static double train_gelu_grad(double x) {
    const double s = sqrt(2.0 / M_PI), c = 0.044715;
    double t = tanh(s * (x + c * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * s * (1.0 + 3.0 * c * x * x);
}

/* act'(.) from the saved output y, or from the pre-activation z for gelu. */
static double train_act_grad(neat_activation act, double z, double y) {
    switch (act) {
    case NEAT_ACT_RELU: return y > 0.0 ? 1.0 : 0.0;
    case NEAT_ACT_SIGMOID: return y * (1.0 - y);
    case NEAT_ACT_TANH: return 1.0 - y * y;
    case NEAT_ACT_GELU: return train_gelu_grad(z);
    default: return 1.0;
    }
}

void ref_activation_backward(neat_activation act, const double *x, const double *y,
                             const double *dy, double *dx, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        double z = act == NEAT_ACT_GELU ? x[i] : 0.0;
        double yy =
            (act == NEAT_ACT_RELU || act == NEAT_ACT_SIGMOID || act == NEAT_ACT_TANH) ? y[i] : 0.0;
        dx[i] = dy[i] * train_act_grad(act, z, yy);
    }
}

/* Start a gradient: zero it unless accumulating. */
static void train_grad_begin(double *g, int64_t n, int accumulate) {
    if (g && !accumulate) memset(g, 0, sizeof(double) * (size_t)n);
}

/* ---- linear ---------------------------------------------------------------------------- */

/* z = x w^T + b: x [n,in], w [out,in], z [n,out]. */
static void train_linear_preact(const double *x, const double *w, const double *b, int64_t n,
                                int64_t in, int64_t out, double *z) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int64_t j = 0; j < in; j++) s += x[i * in + j] * w[o * in + j];
            z[i * out + o] = s;
        }
}

void ref_linear_backward(const double *x, const double *w, const double *b, const double *y,
                         const double *dy, neat_activation act, int64_t n, int64_t in, int64_t out,
                         double *dx, double *dw, double *db, int accumulate) {
    /* dz = dy * act'(z or y) [n,out]; z (the pre-activation) only for gelu. */
    double *dz = calloc((size_t)(n * out) + 1, sizeof(double));
    double *z = act == NEAT_ACT_GELU ? calloc((size_t)(n * out) + 1, sizeof(double)) : NULL;
    if (!dz || (act == NEAT_ACT_GELU && !z)) {
        /* Never silently wrong: a reference that could not run poisons its outputs. */
        if (dx)
            for (int64_t i = 0; i < n * in; i++) dx[i] = NAN;
        if (dw)
            for (int64_t i = 0; i < out * in; i++) dw[i] = NAN;
        if (db)
            for (int64_t i = 0; i < out; i++) db[i] = NAN;
        free(dz);
        free(z);
        return;
    }
    if (z) train_linear_preact(x, w, b, n, in, out, z);
    for (int64_t i = 0; i < n * out; i++)
        dz[i] = dy[i] * train_act_grad(act, z ? z[i] : 0.0, y && !z ? y[i] : 0.0);

    train_grad_begin(dx, n * in, accumulate);
    train_grad_begin(dw, out * in, accumulate);
    train_grad_begin(db, out, accumulate);
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double g = dz[i * out + o];
            if (db) db[o] += g;
            for (int64_t j = 0; j < in; j++) {
                if (dx) dx[i * in + j] += g * w[o * in + j]; /* dx = dz w */
                if (dw) dw[o * in + j] += g * x[i * in + j]; /* dw = dz^T x */
            }
        }
    free(dz);
    free(z);
}

/* ---- convolution ----------------------------------------------------------------------- */

int64_t ref_train_conv_out_size(int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dil) {
    int64_t span = size + 2 * pad - dil * (k - 1) - 1;
    return span < 0 ? 0 : span / stride + 1;
}

/* Visit every (output, input, weight) triple of the cross-correlation:
 * z[ni,ko,pi,qi] += x[ni, g Cg + cg, pi sh - ph + i dh, qi sw - pw + j dw] w[ko,cg,i,j],
 * g = ko / (K/groups), Cg = C/groups; taps outside the image read zero padding. */
#define TRAIN_CONV_FOR_EACH(d, n, c, h, w, k, P, Q, BODY)                                          \
    do {                                                                                           \
        int64_t cg_n = (c) / (d)->groups, kg_n = (k) / (d)->groups;                                \
        for (int64_t ni = 0; ni < (n); ni++)                                                       \
            for (int64_t ko = 0; ko < (k); ko++)                                                   \
                for (int64_t pi = 0; pi < (P); pi++)                                               \
                    for (int64_t qi = 0; qi < (Q); qi++) {                                         \
                        int64_t zi = ((ni * (k) + ko) * (P) + pi) * (Q) + qi;                      \
                        for (int64_t cg = 0; cg < cg_n; cg++)                                      \
                            for (int64_t i = 0; i < (d)->kernel_h; i++)                            \
                                for (int64_t j = 0; j < (d)->kernel_w; j++) {                      \
                                    int64_t ih =                                                   \
                                        pi * (d)->stride_h - (d)->pad_h + i * (d)->dilation_h;     \
                                    int64_t iw =                                                   \
                                        qi * (d)->stride_w - (d)->pad_w + j * (d)->dilation_w;     \
                                    if (ih < 0 || ih >= (h) || iw < 0 || iw >= (w)) continue;      \
                                    int64_t ci = (ko / kg_n) * cg_n + cg;                          \
                                    int64_t xi = ((ni * (c) + ci) * (h) + ih) * (w) + iw;          \
                                    int64_t wi =                                                   \
                                        ((ko * cg_n + cg) * (d)->kernel_h + i) * (d)->kernel_w +   \
                                        j;                                                         \
                                    BODY;                                                          \
                                }                                                                  \
                    }                                                                              \
    } while (0)

static void train_conv_preact(const neat_conv2d_desc *d, int64_t n, int64_t c, int64_t h, int64_t w,
                              int64_t k, int64_t P, int64_t Q, const double *x, const double *wt,
                              const double *b, double *z) {
    for (int64_t ni = 0; ni < n; ni++)
        for (int64_t ko = 0; ko < k; ko++)
            for (int64_t i = 0; i < P * Q; i++) z[(ni * k + ko) * P * Q + i] = b ? b[ko] : 0.0;
    TRAIN_CONV_FOR_EACH(d, n, c, h, w, k, P, Q, z[zi] += x[xi] * wt[wi]);
}

void ref_conv2d_backward(const neat_conv2d_desc *d, int64_t n, int64_t c, int64_t h, int64_t w,
                         int64_t k, const double *x, const double *wt, const double *b,
                         const double *y, const double *dy, neat_activation act, double *dx,
                         double *dw, double *db, int accumulate) {
    int64_t P = ref_train_conv_out_size(h, d->kernel_h, d->stride_h, d->pad_h, d->dilation_h);
    int64_t Q = ref_train_conv_out_size(w, d->kernel_w, d->stride_w, d->pad_w, d->dilation_w);
    int64_t ny = n * k * P * Q, nw = k * (c / d->groups) * d->kernel_h * d->kernel_w;
    double *dz = calloc((size_t)ny + 1, sizeof(double));
    double *z = act == NEAT_ACT_GELU ? calloc((size_t)ny + 1, sizeof(double)) : NULL;
    if (!dz || (act == NEAT_ACT_GELU && !z)) {
        if (dx)
            for (int64_t i = 0; i < n * c * h * w; i++) dx[i] = NAN;
        if (dw)
            for (int64_t i = 0; i < nw; i++) dw[i] = NAN;
        if (db)
            for (int64_t i = 0; i < k; i++) db[i] = NAN;
        free(dz);
        free(z);
        return;
    }
    if (z) train_conv_preact(d, n, c, h, w, k, P, Q, x, wt, b, z);
    for (int64_t i = 0; i < ny; i++)
        dz[i] = dy[i] * train_act_grad(act, z ? z[i] : 0.0, y && !z ? y[i] : 0.0);

    train_grad_begin(dx, n * c * h * w, accumulate);
    train_grad_begin(dw, nw, accumulate);
    train_grad_begin(db, k, accumulate);
    if (db)
        for (int64_t ni = 0; ni < n; ni++)
            for (int64_t ko = 0; ko < k; ko++)
                for (int64_t i = 0; i < P * Q; i++) db[ko] += dz[(ni * k + ko) * P * Q + i];
    if (dx) TRAIN_CONV_FOR_EACH(d, n, c, h, w, k, P, Q, dx[xi] += dz[zi] * wt[wi]);
    if (dw) TRAIN_CONV_FOR_EACH(d, n, c, h, w, k, P, Q, dw[wi] += dz[zi] * x[xi]);
    free(dz);
    free(z);
}

/* ---- max pooling ----------------------------------------------------------------------- */

int64_t ref_train_pool_out_size(int64_t size, int64_t k, int64_t stride, int64_t pad) {
    int64_t span = size + 2 * pad - k;
    return span < 0 ? 0 : span / stride + 1;
}

void ref_maxpool2d_backward(const neat_pool2d_desc *d, int64_t n, int64_t c, int64_t h, int64_t w,
                            const double *x, const double *dy, double *dx) {
    int64_t P = ref_train_pool_out_size(h, d->kernel_h, d->stride_h, d->pad_h);
    int64_t Q = ref_train_pool_out_size(w, d->kernel_w, d->stride_w, d->pad_w);
    memset(dx, 0, sizeof(double) * (size_t)(n * c * h * w));
    for (int64_t nc = 0; nc < n * c; nc++)
        for (int64_t pi = 0; pi < P; pi++)
            for (int64_t qi = 0; qi < Q; qi++) {
                /* Padding is -inf: only taps inside the image compete; strict > keeps the
                 * first maximum of the row-major scan. */
                int64_t best = -1;
                for (int64_t i = 0; i < d->kernel_h; i++)
                    for (int64_t j = 0; j < d->kernel_w; j++) {
                        int64_t ih = pi * d->stride_h - d->pad_h + i;
                        int64_t iw = qi * d->stride_w - d->pad_w + j;
                        if (ih < 0 || ih >= h || iw < 0 || iw >= w) continue;
                        int64_t at = (nc * h + ih) * w + iw;
                        if (best < 0 || x[at] > x[best]) best = at;
                    }
                if (best >= 0) dx[best] += dy[(nc * P + pi) * Q + qi];
            }
}

/* ---- softmax and cross-entropy --------------------------------------------------------- */

void ref_softmax_backward(int64_t rows, int64_t cols, const double *y, const double *dy,
                          double *dx) {
    for (int64_t r = 0; r < rows; r++) {
        const double *yr = y + r * cols, *dyr = dy + r * cols;
        double dot = 0.0;
        for (int64_t j = 0; j < cols; j++) dot += dyr[j] * yr[j];
        for (int64_t j = 0; j < cols; j++) dx[r * cols + j] = yr[j] * (dyr[j] - dot);
    }
}

/* log sum_j exp(row[j]), max-subtracted. */
/* A row's maximum *m and log sum_j e^(x_j - m). Kept apart, not added: m + log s loses
 * log s (and every term after it) once m passes 2^53. */
static double train_log_sum(const double *row, int64_t cols, double *m) {
    double mx = -INFINITY, s = 0.0;
    for (int64_t j = 0; j < cols; j++) mx = row[j] > mx ? row[j] : mx;
    for (int64_t j = 0; j < cols; j++) s += exp(row[j] - mx);
    *m = mx;
    return log(s);
}

double ref_softmax_xent(int64_t rows, int64_t cols, const double *logits, const double *labels) {
    if (rows == 0) return 0.0;
    double total = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = logits + r * cols;
        double m, log_s = train_log_sum(row, cols, &m);
        total += (m - row[(int64_t)labels[r]]) + log_s;
    }
    return total / (double)rows;
}

void ref_softmax_xent_backward(int64_t rows, int64_t cols, const double *logits,
                               const double *labels, double *dlogits) {
    for (int64_t r = 0; r < rows; r++) {
        const double *row = logits + r * cols;
        double m, log_s = train_log_sum(row, cols, &m);
        for (int64_t j = 0; j < cols; j++) {
            double p = exp((row[j] - m) - log_s);
            dlogits[r * cols + j] = (p - (j == (int64_t)labels[r] ? 1.0 : 0.0)) / (double)rows;
        }
    }
}

/* ---- optimizers ------------------------------------------------------------------------ */

void ref_sgd_update(const neat_sgd_params *p, double lr, double *param, const double *grad,
                    double *velocity, int64_t n) {
    double mom = p->momentum, wd = p->weight_decay;
    for (int64_t i = 0; i < n; i++) {
        double g = grad[i] + wd * param[i];
        double step = g;
        if (mom != 0.0) {
            velocity[i] = mom * velocity[i] + g;
            step = p->nesterov ? g + mom * velocity[i] : velocity[i];
        }
        param[i] -= lr * step;
    }
}

void ref_adam_update(const neat_adam_params *p, double lr, double t, double *param,
                     const double *grad, double *m, double *v, int64_t n) {
    double b1 = p->beta1, b2 = p->beta2, eps = p->eps, wd = p->weight_decay;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) {
        double g = grad[i];
        param[i] *= 1.0 - lr * wd;
        m[i] = b1 * m[i] + (1.0 - b1) * g;
        v[i] = b2 * v[i] + (1.0 - b2) * g * g;
        param[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}
