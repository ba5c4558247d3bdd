/*
 * reference.h — naive float64 references of the forward ops, for the conformance tests.
 *
 * Plain loops in double precision, written from the definitions in neatml.h and sharing no
 * code with the library (only its public enum and descriptor types). Every array is a
 * row-major double array; sizes are int64_t. The matmul-like references also return, per
 * output element, the magnitude the float32 rounding error scales with:
 * abs[i] = sum over the reduction of |a||b| (plus |bias|, |alpha|, |beta c| where present),
 * so that a test can bound |got - ref| <= c * K * 2^-24 * abs[i]. abs may be NULL.
 *
 * Backward references live in reference_train.h.
 */
#ifndef NEATML_TEST_REFERENCE_H
#define NEATML_TEST_REFERENCE_H

#include "neatml.h"

#include <stdint.h>

/* act(x) for one value; GELU is the tanh form 0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3))). */
double ref_act(neat_activation act, double x);

/* y[i] = act(x[i]), n elements (y may be x). */
void ref_activation(neat_activation act, const double *x, double *y, int64_t n);

/* c = alpha op(a) op(b) + beta c: op(a) m x k (a stored k x m when trans_a), op(b) k x n
 * (b stored n x k when trans_b), c m x n. beta == 0 does not read c (a NaN there is
 * ignored). abs[i] = |alpha| sum_k |op(a)||op(b)| + |beta c_old|. */
void ref_matmul(const double *a, const double *b, double *c, double *abs, int64_t m, int64_t n,
                int64_t k, double alpha, double beta, int trans_a, int trans_b);

/* ref_matmul over `batch` consecutive matrices of a, b, c (and abs). */
void ref_matmul_batched(const double *a, const double *b, double *c, double *abs, int64_t batch,
                        int64_t m, int64_t n, int64_t k, double alpha, double beta, int trans_a,
                        int trans_b);

/* out = a + b, a rows x cols; b rows x cols, or one row of cols added to every row when
 * broadcast != 0. out may be a or b. */
void ref_add(const double *a, const double *b, double *out, int64_t rows, int64_t cols,
             int broadcast);

/* out = a * b, the same shapes as ref_add. */
void ref_mul(const double *a, const double *b, double *out, int64_t rows, int64_t cols,
             int broadcast);

/* out = alpha x, n elements (out may be x). */
void ref_scale(const double *x, double alpha, double *out, int64_t n);

/* y = act(x w^T + b): x [n,in], w [out,in], b [out] or NULL, y [n,out].
 * z (may be NULL) receives the pre-activation, abs the error scale of z:
 * sum_i |x||w| + |b|. */
void ref_linear_forward(const double *x, const double *w, const double *b, neat_activation act,
                        double *y, double *z, double *abs, int64_t n, int64_t in, int64_t out);

/* Geometry of a convolution or pooling: input [n,c,h,w], output [n,k,p,q]. */
typedef struct ref_conv_shape {
    int64_t n, c, h, w, k;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
} ref_conv_shape;

/* Output size of one axis: (in + 2 pad - dil (kern - 1) - 1) / stride + 1, floor; may be
 * <= 0 for a kernel larger than the padded input. */
int64_t ref_conv_out(int64_t in, int64_t kern, int64_t stride, int64_t pad, int64_t dil);

/* y = act(conv2d(x, w) + b), a cross-correlation with zero padding:
 * y[n,k,p,q] = b[k] + sum_{c in group(k), i, j} x[n,c, p sh - ph + i dh, q sw - pw + j dw]
 *                                                 * w[k, c - group start, i, j]
 * x [n,c,h,w], w [k, c/groups, kh, kw], b [k] or NULL, y [n,k,p,q].
 * z (may be NULL) receives the pre-activation, abs the error scale of z. */
void ref_conv2d_forward(const ref_conv_shape *s, const double *x, const double *w, const double *b,
                        neat_activation act, double *y, double *z, double *abs);

/* y[n,c,p,q] = max over the kh x kw window at (p sh - ph, q sw - pw) of x; padding is -inf.
 * Uses s->n, c, h, w, kh, kw, sh, sw, ph, pw (dilation 1, k = c). */
void ref_maxpool2d(const ref_conv_shape *s, const double *x, double *y);

/* The sum of n elements; *abs (may be NULL) receives sum |x|. */
double ref_sum_all(const double *x, int64_t n, double *abs);

/* x seen as [outer, len, inner]: y[o, i] = sum_l x[o, l, i]; abs (may be NULL) the same
 * over |x|. */
void ref_sum_axis(const double *x, double *y, double *abs, int64_t outer, int64_t len,
                  int64_t inner);

/* y = softmax of each row of x [rows, cols], max-subtracted. y may be x. */
void ref_softmax(const double *x, double *y, int64_t rows, int64_t cols);

#endif
