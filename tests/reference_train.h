/*
 * reference_train.h — naive float64 references of the training ops (backward passes, the
 * fused softmax cross-entropy, the optimizers), the ground truth of the training rows of
 * tests/test_conformance.c and of tests/test_optim.c.
 *
 * Conventions: every array is double, row-major, with the shapes of the matching neat_*
 * call. Gradients follow the library's rules: a NULL gradient is skipped; accumulate = 0
 * overwrites, != 0 adds to the contents. Activation derivatives are taken from the saved
 * output y (relu, sigmoid, tanh) or, for gelu (tanh form), from the pre-activation, which
 * the linear and conv references recompute from x, w and b. The code is written to be
 * obviously right, not fast: plain loops in the order of the math.
 */
#ifndef NEATML_REFERENCE_TRAIN_H
#define NEATML_REFERENCE_TRAIN_H

#include "neatml.h"

#include <stdint.h>

/* dx = dy * act'(.) over n elements: relu/sigmoid/tanh read y, gelu reads x, NONE copies. */
void ref_activation_backward(neat_activation act, const double *x, const double *y,
                             const double *dy, double *dx, int64_t n);

/* Gradients of y = act(x w^T + b): x [n,in], w [out,in], b [out] or NULL, y [n,out] (read
 * for relu/sigmoid/tanh), dy [n,out]; dx [n,in], dw [out,in], db [out], each may be NULL.
 * dz = dy * act'; dx = dz w; dw = dz^T x; db = column sums of dz. */
void ref_linear_backward(const double *x, const double *w, const double *b, const double *y,
                         const double *dy, neat_activation act, int64_t n, int64_t in, int64_t out,
                         double *dx, double *dw, double *db, int accumulate);

/* Output size of a convolution along one axis: (size + 2 pad - dil (k-1) - 1) / stride + 1. */
int64_t ref_train_conv_out_size(int64_t size, int64_t k, int64_t stride, int64_t pad, int64_t dil);

/* Gradients of y = act(conv2d(x, w) + b): x [n,c,h,w], w [k,c/groups,kh,kw], b [k] or NULL,
 * y and dy [n,k,p,q]; dx, dw, db of x's, w's and b's shapes, each may be NULL. */
void ref_conv2d_backward(const neat_conv2d_desc *d, int64_t n, int64_t c, int64_t h, int64_t w,
                         int64_t k, const double *x, const double *wt, const double *b,
                         const double *y, const double *dy, neat_activation act, double *dx,
                         double *dw, double *db, int accumulate);

/* Output size of a pooling along one axis: (size + 2 pad - k) / stride + 1. */
int64_t ref_train_pool_out_size(int64_t size, int64_t k, int64_t stride, int64_t pad);

/* dx [n,c,h,w] = each dy [n,c,p,q] element sent to the first maximum (row-major scan) of
 * its window in x; overlapping windows add. dx is overwritten. */
void ref_maxpool2d_backward(const neat_pool2d_desc *d, int64_t n, int64_t c, int64_t h, int64_t w,
                            const double *x, const double *dy, double *dx);

/* dx = y * (dy - sum(dy * y)) along rows of [rows, cols]; y is softmax's output. */
void ref_softmax_backward(int64_t rows, int64_t cols, const double *y, const double *dy,
                          double *dx);

/* The mean over rows of -log softmax(logits)[label] (0 for rows = 0); labels hold class
 * indices 0..cols-1. Max-subtracted, so logits of +-1000 stay finite. */
double ref_softmax_xent(int64_t rows, int64_t cols, const double *logits, const double *labels);

/* dlogits = (softmax(logits) - onehot(labels)) / rows. */
void ref_softmax_xent_backward(int64_t rows, int64_t cols, const double *logits,
                               const double *labels, double *dlogits);

/* One SGD step with learning rate lr over n elements (PyTorch's SGD, dampening 0):
 * g = grad + wd param; v = momentum v + g; param -= lr (nesterov ? g + momentum v : v);
 * without momentum param -= lr g and velocity is not touched (may be NULL). */
void ref_sgd_update(const neat_sgd_params *p, double lr, double *param, const double *grad,
                    double *velocity, int64_t n);

/* One AdamW step t (1, 2, ...) with learning rate lr over n elements:
 * param *= 1 - lr wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * param -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps). */
void ref_adam_update(const neat_adam_params *p, double lr, double t, double *param,
                     const double *grad, double *m, double *v, int64_t n);

#endif
