/*
 * reference.c — naive float64 references of the forward ops (see reference.h).
 *
 * Deliberately the plainest loops: one output element at a time, the definition written
 * out, no blocking, no sharing with the library. Speed is not a goal; the tests keep the
 * shapes small enough for these loops.
 */
#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double ref_act(neat_activation act, double x) {
    switch (act) {
    case NEAT_ACT_RELU: return x > 0 ? x : 0;
    case NEAT_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case NEAT_ACT_TANH: return tanh(x);
    case NEAT_ACT_GELU: {
        const double k = sqrt(2.0 / M_PI);
        return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
    }
    case NEAT_ACT_NONE:
    default: return x;
    }
}

void ref_activation(neat_activation act, const double *x, double *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = ref_act(act, x[i]);
}

void ref_matmul(const double *a, const double *b, double *c, double *abs, int64_t m, int64_t n,
                int64_t k, double alpha, double beta, int trans_a, int trans_b) {
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0, sa = 0;
            for (int64_t l = 0; l < k; l++) {
                double av = trans_a ? a[l * m + i] : a[i * k + l];
                double bv = trans_b ? b[j * k + l] : b[l * n + j];
                s += av * bv;
                sa += fabs(av * bv);
            }
            /* beta == 0 must not read c: a NaN there would otherwise survive as 0 * NaN. */
            double old = beta != 0 ? beta * c[i * n + j] : 0;
            c[i * n + j] = alpha * s + old;
            if (abs) abs[i * n + j] = fabs(alpha) * sa + fabs(old);
        }
}

void ref_matmul_batched(const double *a, const double *b, double *c, double *abs, int64_t batch,
                        int64_t m, int64_t n, int64_t k, double alpha, double beta, int trans_a,
                        int trans_b) {
    for (int64_t i = 0; i < batch; i++)
        ref_matmul(a + i * m * k, b + i * k * n, c + i * m * n, abs ? abs + i * m * n : NULL, m, n,
                   k, alpha, beta, trans_a, trans_b);
}

void ref_add(const double *a, const double *b, double *out, int64_t rows, int64_t cols,
             int broadcast) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            out[r * cols + j] = a[r * cols + j] + (broadcast ? b[j] : b[r * cols + j]);
}

void ref_mul(const double *a, const double *b, double *out, int64_t rows, int64_t cols,
             int broadcast) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < cols; j++)
            out[r * cols + j] = a[r * cols + j] * (broadcast ? b[j] : b[r * cols + j]);
}

void ref_scale(const double *x, double alpha, double *out, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = alpha * x[i];
}

void ref_linear_forward(const double *x, const double *w, const double *b, neat_activation act,
                        double *y, double *z, double *abs, int64_t n, int64_t in, int64_t out) {
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0, sa = b ? fabs(b[o]) : 0;
            for (int64_t i = 0; i < in; i++) {
                s += x[r * in + i] * w[o * in + i];
                sa += fabs(x[r * in + i] * w[o * in + i]);
            }
            if (z) z[r * out + o] = s;
            if (abs) abs[r * out + o] = sa;
            y[r * out + o] = ref_act(act, s);
        }
}

int64_t ref_conv_out(int64_t in, int64_t kern, int64_t stride, int64_t pad, int64_t dil) {
    int64_t span = in + 2 * pad - dil * (kern - 1) - 1;
    /* floor division, also for a negative span */
    return (span >= 0 ? span / stride : -((-span + stride - 1) / stride)) + 1;
}

void ref_conv2d_forward(const ref_conv_shape *s, const double *x, const double *w, const double *b,
                        neat_activation act, double *y, double *z, double *abs) {
    int64_t p_out = ref_conv_out(s->h, s->kh, s->sh, s->ph, s->dh);
    int64_t q_out = ref_conv_out(s->w, s->kw, s->sw, s->pw, s->dw);
    int64_t cg = s->c / s->groups, kg = s->k / s->groups; /* channels, filters per group */
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t k = 0; k < s->k; k++) {
            int64_t c0 = (k / kg) * cg; /* first input channel of k's group */
            for (int64_t p = 0; p < p_out; p++)
                for (int64_t q = 0; q < q_out; q++) {
                    double acc = b ? b[k] : 0, acc_abs = b ? fabs(b[k]) : 0;
                    for (int64_t c = 0; c < cg; c++)
                        for (int64_t i = 0; i < s->kh; i++) {
                            int64_t hy = p * s->sh - s->ph + i * s->dh;
                            if (hy < 0 || hy >= s->h) continue;
                            for (int64_t j = 0; j < s->kw; j++) {
                                int64_t wx = q * s->sw - s->pw + j * s->dw;
                                if (wx < 0 || wx >= s->w) continue;
                                double xv = x[((n * s->c + c0 + c) * s->h + hy) * s->w + wx];
                                double wv = w[((k * cg + c) * s->kh + i) * s->kw + j];
                                acc += xv * wv;
                                acc_abs += fabs(xv * wv);
                            }
                        }
                    int64_t o = ((n * s->k + k) * p_out + p) * q_out + q;
                    if (z) z[o] = acc;
                    if (abs) abs[o] = acc_abs;
                    y[o] = ref_act(act, acc);
                }
        }
}

void ref_maxpool2d(const ref_conv_shape *s, const double *x, double *y) {
    int64_t p_out = ref_conv_out(s->h, s->kh, s->sh, s->ph, 1);
    int64_t q_out = ref_conv_out(s->w, s->kw, s->sw, s->pw, 1);
    for (int64_t nc = 0; nc < s->n * s->c; nc++)
        for (int64_t p = 0; p < p_out; p++)
            for (int64_t q = 0; q < q_out; q++) {
                double m = -INFINITY;
                for (int64_t i = 0; i < s->kh; i++)
                    for (int64_t j = 0; j < s->kw; j++) {
                        int64_t hy = p * s->sh - s->ph + i, wx = q * s->sw - s->pw + j;
                        if (hy < 0 || hy >= s->h || wx < 0 || wx >= s->w) continue;
                        double v = x[(nc * s->h + hy) * s->w + wx];
                        if (v > m) m = v;
                    }
                y[(nc * p_out + p) * q_out + q] = m;
            }
}

double ref_sum_all(const double *x, int64_t n, double *abs) {
    /* Kahan-compensated: for 10^7 terms the plain double sum would already carry an error
     * near 1e-10 relative, harmless, but the compensation keeps the reference exact
     * enough to serve any tolerance. */
    double s = 0, comp = 0, sa = 0;
    for (int64_t i = 0; i < n; i++) {
        double yv = x[i] - comp, t = s + yv;
        comp = (t - s) - yv;
        s = t;
        sa += fabs(x[i]);
    }
    if (abs) *abs = sa;
    return s;
}

void ref_sum_axis(const double *x, double *y, double *abs, int64_t outer, int64_t len,
                  int64_t inner) {
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s = 0, sa = 0;
            for (int64_t l = 0; l < len; l++) {
                double v = x[(o * len + l) * inner + i];
                s += v;
                sa += fabs(v);
            }
            y[o * inner + i] = s;
            if (abs) abs[o * inner + i] = sa;
        }
}

void ref_softmax(const double *x, double *y, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * cols;
        double *yr = y + r * cols;
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < cols; j++) mx = xr[j] > mx ? xr[j] : mx;
        for (int64_t j = 0; j < cols; j++) sum += exp(xr[j] - mx);
        for (int64_t j = 0; j < cols; j++) yr[j] = exp(xr[j] - mx) / sum;
    }
}
