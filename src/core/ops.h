/*
 * ops.h — the args struct of each recorded op (one per entry of op_list.h), filled once by
 * the op's record function with resolved tensors and precomputed sizes.
 *
 * Every struct opens with NM_TENSORS(...): the tensors the op reads or writes, by name, and
 * the same pointers as the array `tensors`, which is how the core walks them (handles kept
 * for the commit-time check, storage held by submissions) without a list per op. A tensor
 * the op does not use is NULL.
 */
#ifndef NEATML_OPS_H
#define NEATML_OPS_H

#include "neatml.h"

#include <stdint.h>
#include <stdio.h>

typedef struct nm_tensor nm_tensor;
typedef struct nm_comm nm_comm;

/* NM_TENSORS(a, b, c) declares `nm_tensor *a, *b, *c` overlaid by `nm_tensor *tensors[3]`. */
#define NM_NARGS_(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, N, ...) N
#define NM_NARGS(...) NM_NARGS_(__VA_ARGS__, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define NM_CAT_(a, b) a##b
#define NM_CAT(a, b) NM_CAT_(a, b)
#define NM_PTR_(x) *x
#define NM_MAP1_(f, a) f(a)
#define NM_MAP2_(f, a, ...) f(a), NM_MAP1_(f, __VA_ARGS__)
#define NM_MAP3_(f, a, ...) f(a), NM_MAP2_(f, __VA_ARGS__)
#define NM_MAP4_(f, a, ...) f(a), NM_MAP3_(f, __VA_ARGS__)
#define NM_MAP5_(f, a, ...) f(a), NM_MAP4_(f, __VA_ARGS__)
#define NM_MAP6_(f, a, ...) f(a), NM_MAP5_(f, __VA_ARGS__)
#define NM_MAP7_(f, a, ...) f(a), NM_MAP6_(f, __VA_ARGS__)
#define NM_MAP8_(f, a, ...) f(a), NM_MAP7_(f, __VA_ARGS__)
#define NM_MAP_(f, ...) NM_CAT(NM_MAP, NM_CAT(NM_NARGS(__VA_ARGS__), _))(f, __VA_ARGS__)
#define NM_TENSORS(...)                                                                            \
    union {                                                                                        \
        struct {                                                                                   \
            nm_tensor NM_MAP_(NM_PTR_, __VA_ARGS__);                                               \
        };                                                                                         \
        nm_tensor *tensors[NM_NARGS(__VA_ARGS__)];                                                 \
    }

/* Geometry of a 2-D convolution or pooling, derived once at recording. nhwc: the tensors
 * are [N,H,W,C], [K,kh,kw,C/groups] and [N,P,Q,K] (the sizes here are the same either way). */
typedef struct nm_conv_geom {
    int64_t n, c, h, w; /* input */
    int64_t k, p, q;    /* output channels and size */
    int64_t kh, kw, sh, sw, ph, pw, dh, dw, groups;
    int64_t nhwc; /* int64_t: no padding in the struct, which plan caches hash as bytes */
} nm_conv_geom;

/* c = alpha op(a) op(b) + beta c over `batch` matrices (1 for neat_matmul);
 * op(a) is m x k, op(b) k x n. */
typedef struct nm_matmul_args {
    NM_TENSORS(a, b, c);
    float alpha, beta;
    int trans_a, trans_b;
    int64_t batch, m, n, k;
} nm_matmul_args;

/* out = a + b; b is a's shape, or one row of cols added to each of the rows. */
typedef struct nm_add_args {
    NM_TENSORS(a, b, out);
    int64_t rows, cols; /* a seen as rows x cols (cols = last dim) */
    int broadcast;
} nm_add_args;
typedef nm_add_args nm_mul_args; /* out = a * b, the same broadcasting */

typedef struct nm_scale_args {
    NM_TENSORS(x, out);
    float alpha;
} nm_scale_args;

typedef struct nm_fill_args {
    NM_TENSORS(t);
    float value;
} nm_fill_args;

/* y = act(x w^T + b): x [n,in], w [out,in], b [out] or NULL. */
typedef struct nm_linear_forward_args {
    NM_TENSORS(x, w, b, y);
    neat_activation act;
    int64_t n, in, out;
} nm_linear_forward_args;

/* Gradients of linear_forward. b is kept only for gelu (recomputes the pre-activation), y
 * only for relu/sigmoid/tanh; dx, dw, db may each be NULL. */
typedef struct nm_linear_backward_args {
    NM_TENSORS(x, w, b, y, dy, dx, dw, db);
    neat_activation act;
    int accumulate;
    int64_t n, in, out;
} nm_linear_backward_args;

typedef struct nm_conv2d_forward_args {
    NM_TENSORS(x, w, b, y);
    neat_activation act;
    nm_conv_geom g;
} nm_conv2d_forward_args;

typedef struct nm_conv2d_backward_args {
    NM_TENSORS(x, w, b, y, dy, dx, dw, db);
    neat_activation act;
    int accumulate;
    nm_conv_geom g;
} nm_conv2d_backward_args;

typedef struct nm_maxpool2d_args {
    NM_TENSORS(x, y);
    nm_conv_geom g; /* g.k == g.c */
} nm_maxpool2d_args;

typedef struct nm_maxpool2d_backward_args {
    NM_TENSORS(x, dy, dx);
    nm_conv_geom g;
} nm_maxpool2d_backward_args;

/* x seen as [outer, len, inner], summed over len; axis -1 for neat_sum_all ([1, numel, 1]). */
typedef struct nm_sum_args {
    NM_TENSORS(x, y);
    int axis;
    int64_t outer, len, inner;
} nm_sum_args;

typedef struct nm_softmax_args {
    NM_TENSORS(x, y);
    int64_t rows, cols;
} nm_softmax_args;

typedef struct nm_softmax_backward_args {
    NM_TENSORS(y, dy, dx);
    int64_t rows, cols;
} nm_softmax_backward_args;

/* Forward: out = act(x). */
typedef struct nm_activation_forward_args {
    NM_TENSORS(x, out);
    neat_activation act;
} nm_activation_forward_args;

/* out = dy act'(.): from y (relu, sigmoid, tanh; x NULL) or x (gelu; y NULL). */
typedef struct nm_activation_backward_args {
    NM_TENSORS(x, y, dy, out);
    neat_activation act;
} nm_activation_backward_args;

/* Forward: out = the mean loss [1]; backward: out = dlogits [rows, cols]. */
typedef struct nm_softmax_xent_args {
    NM_TENSORS(logits, labels, out);
    int64_t rows, cols;
} nm_softmax_xent_args;
typedef nm_softmax_xent_args nm_softmax_xent_backward_args;

/* The optimizers' run-time rule on hyper = [lr, step], which is read when the op runs: lr
 * finite and >= 0; for Adam, step finite and >= 1 (its bias correction divides by
 * 1 - beta^step). Formats what is wrong into msg and returns 0, or returns 1. Shared by
 * the backends so that every one fails the same way, before writing anything. */
static inline int nm_hyper_valid(float lr, float step, int uses_step, char *msg, int size) {
    if (!(lr >= 0 && lr <= 3.4e38f)) {
        snprintf(msg, (size_t)size, "hyper[0] (the learning rate) is %g: must be finite and >= 0",
                 (double)lr);
        return 0;
    }
    if (uses_step && !(step >= 1 && step <= 3.4e38f)) {
        snprintf(msg, (size_t)size, "hyper[1] (the step) is %g: must be finite and >= 1",
                 (double)step);
        return 0;
    }
    return 1;
}

/* The optimizers, plain (neat_sgd_update: master is the param, scaler and param NULL, every
 * tensor float32) or mixed (neat_*_update_mixed: mixed = 1; grad and param of any dtype).
 * master and the state are float32. g = grad / scaler[0] when scaler is given, and the
 * step writes nothing when scaler[1] != 0; param, when given, gets master rounded to its
 * dtype. The any-dtype slots come last (record.c: mixed_dtype_from). */
typedef struct nm_sgd_update_args {
    NM_TENSORS(hyper, master, velocity, scaler, grad, param); /* velocity NULL: momentum 0 */
    neat_sgd_params p;
    int mixed;
} nm_sgd_update_args;

typedef struct nm_adam_update_args {
    NM_TENSORS(hyper, master, m, v, scaler, grad, param);
    neat_adam_params p;
    int mixed;
} nm_adam_update_args;

/* Dynamic loss scaling: scaler = [scale, found_inf, good steps] (float32, 3 elements).
 * loss_scale: y = x * scaler[0] (x, y one dtype, any). loss_scale_check: scaler[1] = 1 if
 * any element of the op's list (nm_op.list; any dtypes) is NaN or infinite, else 0; `none`
 * stays NULL. loss_scale_update: the scale's growth or backoff (p). */
typedef struct nm_loss_scale_args {
    NM_TENSORS(scaler, x, y);
} nm_loss_scale_args;

typedef struct nm_loss_scale_check_args {
    NM_TENSORS(scaler);
} nm_loss_scale_check_args;

typedef struct nm_loss_scale_update_args {
    NM_TENSORS(scaler);
    neat_loss_scale_params p;
} nm_loss_scale_update_args;

/* Recorded host copies. From host: src is read at commit (the backend stages it in its
 * submit), so the caller may refill it once neat_cmdbuf_commit returns; to host: dst is
 * written when the op has run, complete once wait returns. count = t->numel floats. */
typedef struct nm_copy_from_host_args {
    NM_TENSORS(t);
    const float *src;
} nm_copy_from_host_args;

typedef struct nm_copy_to_host_args {
    NM_TENSORS(t);
    float *dst;
} nm_copy_to_host_args;

/* y = x converted to y's dtype (any pair, same shapes; y may be x). */
typedef struct nm_cast_args {
    NM_TENSORS(x, y);
} nm_cast_args;

/* Collectives (ops_comm.c). count: elements per rank, the same on every rank (checked
 * at the op's first run). The comm's handle is re-checked at commit (nm_op.comm). */
typedef struct nm_all_reduce_args {
    NM_TENSORS(x, y); /* y may be x */
    nm_comm *comm;
    neat_reduce_op op;
    int64_t count;
} nm_all_reduce_args;

/* The bucket's tensors are the op's list (nm_op.list, nlist of them): their number is the
 * caller's, so they do not fit the fixed slots; `none` stays NULL. total = the sum of their
 * element counts; contiguous: they lie back to back from list[first_nonempty]->data, so the
 * reduction runs in place there without packing. */
typedef struct nm_all_reduce_bucket_args {
    NM_TENSORS(none);
    nm_comm *comm;
    neat_reduce_op op;
    int64_t total;
    int contiguous;
} nm_all_reduce_bucket_args;

/* y = root's x; x is NULL on the other ranks unless the caller passed it. */
typedef struct nm_broadcast_args {
    NM_TENSORS(x, y);
    nm_comm *comm;
    int root;
    int64_t count;
} nm_broadcast_args;

#endif
