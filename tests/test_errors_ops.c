/*
 * test_errors_ops.c — the error contract of every op, derived from one description each, on
 * the CPU device.
 *
 * Every op is described once (op_spec: its tensor arguments with valid shapes, its valid
 * options). From that description the suite derives, for every tensor argument: NULL, a
 * destroyed handle, a handle of another kind, a tensor of another device, a wrong size in
 * each dimension and a wrong rank; and for the command buffer: NULL, destroyed, committed.
 * Option rows (OPTION_CASES) break one or two options each. Every call goes through the
 * checker of util_errors.h: the exact status, a substring of neat_last_error(), outputs
 * untouched by a rejected call, and the buffer's one valid op run. Aliasing and the
 * hand-listed shape cases are in test_errors_aliasing.c, devices, tensors and command
 * buffers themselves in test_errors_api.c.
 */
#include "harness.h"
#include "util_errors.h"

#include <math.h>
#include <string.h>

/* The tables below leave trailing fields (free_dims, a second option) zero on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define MAXT 8
enum { REQ = 1, OUTPUT = 2, ANY_SHAPE = 4, NUMEL_ONLY = 8 };

typedef struct targ {
    const char *name;
    int ndim;
    int64_t shape[4];
    int flags;          /* REQ: NULL is rejected; OUTPUT: written by the op; ANY_SHAPE: never
                           checked; NUMEL_ONLY: only the element count matters */
    unsigned free_dims; /* bit d: a different size in dimension d stays valid */
} targ;

typedef struct opts {
    float alpha, beta;
    int trans_a, trans_b, axis, accumulate, null_desc, null_params;
    neat_activation act;
    neat_conv2d_desc conv;
    neat_pool2d_desc pool;
    neat_sgd_params sgd;
    neat_adam_params adam;
    neat_loss_scale_params ls;
    int list_n, null_list; /* neat_loss_scale_check: n when != 0 (-1: 0), tensors NULL */
} opts;

typedef neat_status (*op_call)(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o);

typedef struct op_spec {
    const char *label; /* unique: names the spec in OPTION_CASES and in failures */
    const char *fn;    /* the public function: every message starts with it */
    op_call call;
    opts o;
    int nt;
    targ a[MAXT];
} op_spec;

/* ---- calls: t[] in the order of the public signature --------------------------------- */

#define CONV(o) ((o)->null_desc ? NULL : &(o)->conv)
#define POOL(o) ((o)->null_desc ? NULL : &(o)->pool)
static neat_status c_matmul(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_matmul(cb, t[0], t[1], t[2], o->alpha, o->beta, o->trans_a, o->trans_b);
}
static neat_status c_matmul_b(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_matmul_batched(cb, t[0], t[1], t[2], o->alpha, o->beta, o->trans_a, o->trans_b);
}
static neat_status c_add(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_add(cb, t[0], t[1], t[2]);
}
static neat_status c_mul(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_mul(cb, t[0], t[1], t[2]);
}
static neat_status c_scale(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_scale(cb, t[0], o->alpha, t[1]);
}
static neat_status c_fill(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_fill(cb, t[0], o->alpha);
}
static neat_status c_linear(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_linear_forward(cb, o->act, t[0], t[1], t[2], t[3]);
}
static neat_status c_conv(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_conv2d_forward(cb, CONV(o), o->act, t[0], t[1], t[2], t[3]);
}
static neat_status c_pool(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_maxpool2d(cb, POOL(o), t[0], t[1]);
}
static neat_status c_sum_all(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sum_all(cb, t[0], t[1]);
}
static neat_status c_sum_axis(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sum_axis(cb, t[0], o->axis, t[1]);
}
static neat_status c_softmax(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax(cb, t[0], t[1]);
}
static neat_status c_act_fwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_activation_forward(cb, o->act, t[0], t[1]);
}
static neat_status c_act_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_activation_backward(cb, o->act, t[0], t[1], t[2], t[3]);
}
static neat_status c_linear_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_linear_backward(cb, o->act, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7],
                                o->accumulate);
}
static neat_status c_conv_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_conv2d_backward(cb, CONV(o), o->act, t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7],
                                o->accumulate);
}
static neat_status c_pool_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_maxpool2d_backward(cb, POOL(o), t[0], t[1], t[2]);
}
static neat_status c_softmax_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_backward(cb, t[0], t[1], t[2]);
}
static neat_status c_xent(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_cross_entropy(cb, t[0], t[1], t[2]);
}
static neat_status c_xent_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_cross_entropy_backward(cb, t[0], t[1], t[2]);
}
static neat_status c_sgd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sgd_update(cb, o->null_params ? NULL : &o->sgd, t[0], t[1], t[2], t[3]);
}
static neat_status c_adam(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_adam_update(cb, o->null_params ? NULL : &o->adam, t[0], t[1], t[2], t[3], t[4]);
}
static neat_status c_sgd_mixed(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sgd_update_mixed(cb, o->null_params ? NULL : &o->sgd, t[0], t[1], t[2], t[3], t[4],
                                 t[5]);
}
static neat_status c_adam_mixed(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_adam_update_mixed(cb, o->null_params ? NULL : &o->adam, t[0], t[1], t[2], t[3],
                                  t[4], t[5], t[6]);
}
static neat_status c_loss_scale(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_loss_scale(cb, t[0], t[1], t[2]);
}
/* The list of two tensors t[0], t[1], the scaler t[2]. */
static neat_status c_loss_check(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    const neat_tensor *list[2] = {t[0], t[1]};
    int n = o->list_n == 0 ? 2 : o->list_n == -1 ? 0 : o->list_n;
    return neat_loss_scale_check(cb, o->null_list ? NULL : list, n, t[2]);
}
static neat_status c_loss_update(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_loss_scale_update(cb, o->null_params ? NULL : &o->ls, t[0]);
}
/* The host side of the copies: 12 floats, the element count of their tensor below (its
 * NULL cases are in test_reliability.c). */
static float host12[12];
static neat_status c_copy_in(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_copy_from_host(cb, host12, 12, t[0]);
}
static neat_status c_copy_out(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_copy_to_host(cb, t[0], host12, 12);
}

/* ---- the ops, with valid arguments ----------------------------------------------------
 * Shapes are picked so that one more in any checked dimension makes the call invalid
 * (stride 1 where a size feeds an output size). */
#define CONV_G2                                                                                    \
    {                                                                                              \
        .kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1,        \
        .dilation_h = 1, .dilation_w = 1, .groups = 2                                              \
    }
#define POOL_2                                                                                     \
    { .kernel_h = 2, .kernel_w = 2, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1 }
static const op_spec SPECS[] = {
    {"matmul",
     "neat_matmul",
     c_matmul,
     {.alpha = 1, .beta = 0.5f},
     3,
     {{"a", 2, {3, 5}, REQ}, {"b", 2, {5, 4}, REQ}, {"c", 2, {3, 4}, REQ | OUTPUT}}},
    {"matmul_t",
     "neat_matmul",
     c_matmul,
     {.alpha = 1, .trans_a = 1, .trans_b = 1},
     3,
     {{"a", 2, {5, 3}, REQ}, {"b", 2, {4, 5}, REQ}, {"c", 2, {3, 4}, REQ | OUTPUT}}},
    {"matmul_batched",
     "neat_matmul_batched",
     c_matmul_b,
     {.alpha = 2, .beta = 0},
     3,
     {{"a", 3, {2, 3, 5}, REQ}, {"b", 3, {2, 5, 4}, REQ}, {"c", 3, {2, 3, 4}, REQ | OUTPUT}}},
    {"add",
     "neat_add",
     c_add,
     {0},
     3,
     {{"a", 2, {3, 4}, REQ}, {"b", 2, {3, 4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"mul",
     "neat_mul",
     c_mul,
     {0},
     3,
     {{"a", 2, {3, 4}, REQ}, {"b", 2, {3, 4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"add_row",
     "neat_add",
     c_add,
     {0},
     3,
     {{"a", 2, {3, 4}, REQ}, {"b", 1, {4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"add_row2",
     "neat_add",
     c_add,
     {0},
     3,
     {{"a", 3, {2, 3, 4}, REQ}, {"b", 2, {1, 4}, REQ}, {"out", 3, {2, 3, 4}, REQ | OUTPUT}}},
    {"scale",
     "neat_scale",
     c_scale,
     {.alpha = 2},
     2,
     {{"x", 2, {3, 4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"fill", "neat_fill", c_fill, {.alpha = 3}, 1, {{"t", 2, {3, 4}, REQ | OUTPUT | ANY_SHAPE}}},
    {"linear",
     "neat_linear_forward",
     c_linear,
     {.act = NEAT_ACT_RELU},
     4,
     {{"x", 2, {3, 5}, REQ},
      {"w", 2, {4, 5}, REQ},
      {"b", 1, {4}, 0},
      {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"conv",
     "neat_conv2d_forward",
     c_conv,
     {.act = NEAT_ACT_RELU, .conv = CONV_G2},
     4,
     {{"x", 4, {2, 4, 6, 6}, REQ},
      {"w", 4, {6, 2, 3, 3}, REQ},
      {"b", 1, {6}, 0},
      {"y", 4, {2, 6, 6, 6}, REQ | OUTPUT}}},
    {"maxpool",
     "neat_maxpool2d",
     c_pool,
     {.pool = POOL_2},
     2,
     {{"x", 4, {2, 3, 5, 5}, REQ}, {"y", 4, {2, 3, 6, 6}, REQ | OUTPUT}}},
    {"sum_all",
     "neat_sum_all",
     c_sum_all,
     {0},
     2,
     {{"x", 2, {3, 4}, REQ | ANY_SHAPE}, {"y", 1, {1}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"sum_axis",
     "neat_sum_axis",
     c_sum_axis,
     {.axis = 1},
     2,
     {{"x", 3, {3, 4, 5}, REQ, 1u << 1}, {"y", 2, {3, 5}, REQ | OUTPUT}}},
    {"sum_axis_kept",
     "neat_sum_axis",
     c_sum_axis,
     {.axis = 1},
     2,
     {{"x", 3, {3, 4, 5}, REQ, 1u << 1}, {"y", 3, {3, 1, 5}, REQ | OUTPUT}}},
    {"softmax",
     "neat_softmax",
     c_softmax,
     {0},
     2,
     {{"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_fwd",
     "neat_activation_forward",
     c_act_fwd,
     {.act = NEAT_ACT_TANH},
     2,
     {{"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_bwd_relu",
     "neat_activation_backward",
     c_act_bwd,
     {.act = NEAT_ACT_RELU},
     4,
     {{"x", 2, {3, 4}, 0},
      {"y", 2, {3, 4}, REQ},
      {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_bwd_gelu",
     "neat_activation_backward",
     c_act_bwd,
     {.act = NEAT_ACT_GELU},
     4,
     {{"x", 2, {3, 4}, REQ},
      {"y", 2, {3, 4}, 0},
      {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"linear_bwd",
     "neat_linear_backward",
     c_linear_bwd,
     {.act = NEAT_ACT_SIGMOID},
     8,
     {{"x", 2, {3, 5}, REQ},
      {"w", 2, {4, 5}, REQ},
      {"b", 1, {4}, 0},
      {"y", 2, {3, 4}, REQ},
      {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 5}, OUTPUT},
      {"dw", 2, {4, 5}, OUTPUT},
      {"db", 1, {4}, OUTPUT}}},
    {"linear_bwd_gelu",
     "neat_linear_backward",
     c_linear_bwd,
     {.act = NEAT_ACT_GELU, .accumulate = 1},
     8,
     {{"x", 2, {3, 5}, REQ},
      {"w", 2, {4, 5}, REQ},
      {"b", 1, {4}, 0},
      {"y", 2, {3, 4}, 0},
      {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 5}, OUTPUT},
      {"dw", 2, {4, 5}, OUTPUT},
      {"db", 1, {4}, OUTPUT}}},
    {"conv_bwd",
     "neat_conv2d_backward",
     c_conv_bwd,
     {.act = NEAT_ACT_RELU, .conv = CONV_G2},
     8,
     {{"x", 4, {2, 4, 6, 6}, REQ},
      {"w", 4, {6, 2, 3, 3}, REQ},
      {"b", 1, {6}, 0},
      {"y", 4, {2, 6, 6, 6}, REQ},
      {"dy", 4, {2, 6, 6, 6}, REQ},
      {"dx", 4, {2, 4, 6, 6}, OUTPUT},
      {"dw", 4, {6, 2, 3, 3}, OUTPUT},
      {"db", 1, {6}, OUTPUT}}},
    {"maxpool_bwd",
     "neat_maxpool2d_backward",
     c_pool_bwd,
     {.pool = POOL_2},
     3,
     {{"x", 4, {2, 3, 5, 5}, REQ},
      {"dy", 4, {2, 3, 6, 6}, REQ},
      {"dx", 4, {2, 3, 5, 5}, REQ | OUTPUT}}},
    {"softmax_bwd",
     "neat_softmax_backward",
     c_softmax_bwd,
     {0},
     3,
     {{"y", 2, {3, 4}, REQ}, {"dy", 2, {3, 4}, REQ}, {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"xent",
     "neat_softmax_cross_entropy",
     c_xent,
     {0},
     3,
     {{"logits", 2, {3, 4}, REQ, 1u << 1},
      {"labels", 1, {3}, REQ},
      {"loss", 1, {1}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"xent_bwd",
     "neat_softmax_cross_entropy_backward",
     c_xent_bwd,
     {0},
     3,
     {{"logits", 2, {3, 4}, REQ}, {"labels", 1, {3}, REQ}, {"dlogits", 2, {3, 4}, REQ | OUTPUT}}},
    {"sgd",
     "neat_sgd_update",
     c_sgd,
     {.sgd = {.momentum = 0.9f, .weight_decay = 0.01f, .nesterov = 1}},
     4,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY},
      {"param", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ},
      {"velocity", 2, {3, 4}, REQ | OUTPUT}}},
    {"sgd_plain",
     "neat_sgd_update",
     c_sgd,
     {.sgd = {0}},
     4,
     {{"hyper", 2, {1, 2}, REQ | NUMEL_ONLY},
      {"param", 1, {7}, REQ | OUTPUT},
      {"grad", 1, {7}, REQ},
      {"velocity", 1, {7}, 0}}},
    {"adam",
     "neat_adam_update",
     c_adam,
     {.adam = {0.9f, 0.999f, 1e-8f, 0.01f}},
     5,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY},
      {"param", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ},
      {"m", 2, {3, 4}, REQ | OUTPUT},
      {"v", 2, {3, 4}, REQ | OUTPUT}}},
    {"sgd_mixed",
     "neat_sgd_update_mixed",
     c_sgd_mixed,
     {.sgd = {.momentum = 0.9f, .weight_decay = 0.01f, .nesterov = 1}},
     6,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY},
      {"scaler", 1, {3}, NUMEL_ONLY},
      {"master", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ},
      {"velocity", 2, {3, 4}, REQ | OUTPUT},
      {"param", 2, {3, 4}, OUTPUT}}},
    {"sgd_mixed_plain",
     "neat_sgd_update_mixed",
     c_sgd_mixed,
     {.sgd = {0}},
     6,
     {{"hyper", 2, {1, 2}, REQ | NUMEL_ONLY},
      {"scaler", 2, {3, 1}, NUMEL_ONLY},
      {"master", 1, {7}, REQ | OUTPUT},
      {"grad", 1, {7}, REQ},
      {"velocity", 1, {7}, 0},
      {"param", 1, {7}, OUTPUT}}},
    {"adam_mixed",
     "neat_adam_update_mixed",
     c_adam_mixed,
     {.adam = {0.9f, 0.999f, 1e-8f, 0.01f}},
     7,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY},
      {"scaler", 1, {3}, NUMEL_ONLY},
      {"master", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ},
      {"m", 2, {3, 4}, REQ | OUTPUT},
      {"v", 2, {3, 4}, REQ | OUTPUT},
      {"param", 2, {3, 4}, OUTPUT}}},
    {"loss_scale",
     "neat_loss_scale",
     c_loss_scale,
     {0},
     3,
     {{"scaler", 1, {3}, REQ | NUMEL_ONLY}, {"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"loss_scale_check",
     "neat_loss_scale_check",
     c_loss_check,
     {0},
     3,
     {{"tensors[0]", 2, {3, 4}, REQ | ANY_SHAPE},
      {"tensors[1]", 1, {5}, REQ | ANY_SHAPE},
      {"scaler", 1, {3}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"loss_scale_update",
     "neat_loss_scale_update",
     c_loss_update,
     {.ls = {2.0f, 0.5f, 2000}},
     1,
     {{"scaler", 1, {3}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"copy_from_host",
     "neat_copy_from_host",
     c_copy_in,
     {0},
     1,
     {{"t", 2, {3, 4}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"copy_to_host", "neat_copy_to_host", c_copy_out, {0}, 1, {{"t", 2, {3, 4}, REQ | NUMEL_ONLY}}},
};
#define NSPECS ((int)(sizeof SPECS / sizeof SPECS[0]))

/* ---- options broken one or two at a time --------------------------------------------- */

enum field {
    F_NONE,
    F_ALPHA,
    F_BETA,
    F_ACT,
    F_AXIS,
    F_NULL_DESC,
    F_NULL_P,
    F_CKH,
    F_CKW,
    F_CSH,
    F_CSW,
    F_CPH,
    F_CPW,
    F_CDH,
    F_CDW,
    F_GROUPS,
    F_CLAYOUT,
    F_PLAYOUT,
    F_PKH,
    F_PKW,
    F_PSH,
    F_PSW,
    F_PPH,
    F_PPW,
    F_MOM,
    F_SGD_WD,
    F_NESTEROV,
    F_B1,
    F_B2,
    F_EPS,
    F_ADAM_WD,
    F_GROWTH,
    F_BACKOFF,
    F_INTERVAL,
    F_LIST_N,
    F_NULL_LIST
};

static void set_field(opts *o, int f, double v) {
    switch (f) {
    case F_NONE: break;
    case F_ALPHA: o->alpha = (float)v; break;
    case F_BETA: o->beta = (float)v; break;
    case F_ACT: o->act = (neat_activation)(int)v; break;
    case F_AXIS: o->axis = (int)v; break;
    case F_NULL_DESC: o->null_desc = 1; break;
    case F_NULL_P: o->null_params = 1; break;
    case F_CKH: o->conv.kernel_h = (int64_t)v; break;
    case F_CKW: o->conv.kernel_w = (int64_t)v; break;
    case F_CSH: o->conv.stride_h = (int64_t)v; break;
    case F_CSW: o->conv.stride_w = (int64_t)v; break;
    case F_CPH: o->conv.pad_h = (int64_t)v; break;
    case F_CPW: o->conv.pad_w = (int64_t)v; break;
    case F_CDH: o->conv.dilation_h = (int64_t)v; break;
    case F_CDW: o->conv.dilation_w = (int64_t)v; break;
    case F_GROUPS: o->conv.groups = (int64_t)v; break;
    case F_CLAYOUT: o->conv.layout = (neat_layout)(int)v; break;
    case F_PLAYOUT: o->pool.layout = (neat_layout)(int)v; break;
    case F_PKH: o->pool.kernel_h = (int64_t)v; break;
    case F_PKW: o->pool.kernel_w = (int64_t)v; break;
    case F_PSH: o->pool.stride_h = (int64_t)v; break;
    case F_PSW: o->pool.stride_w = (int64_t)v; break;
    case F_PPH: o->pool.pad_h = (int64_t)v; break;
    case F_PPW: o->pool.pad_w = (int64_t)v; break;
    case F_MOM: o->sgd.momentum = (float)v; break;
    case F_SGD_WD: o->sgd.weight_decay = (float)v; break;
    case F_NESTEROV: o->sgd.nesterov = (int)v; break;
    case F_B1: o->adam.beta1 = (float)v; break;
    case F_B2: o->adam.beta2 = (float)v; break;
    case F_EPS: o->adam.eps = (float)v; break;
    case F_ADAM_WD: o->adam.weight_decay = (float)v; break;
    case F_GROWTH: o->ls.growth_factor = (float)v; break;
    case F_BACKOFF: o->ls.backoff_factor = (float)v; break;
    case F_INTERVAL: o->ls.growth_interval = (int)v; break;
    case F_LIST_N: o->list_n = (int)v; break;
    case F_NULL_LIST: o->null_list = 1; break;
    }
}

typedef struct option_case {
    const char *spec;
    struct {
        int f;
        double v;
    } set[2];
    neat_status want;
    const char *msg;
} option_case;

#define INV NEAT_ERR_INVALID_ARGUMENT
#define SHP NEAT_ERR_SHAPE_MISMATCH
static const option_case OPTION_CASES[] = {
    {"matmul", {{F_ALPHA, NAN}}, INV, "neat_matmul: alpha is nan: must be finite"},
    {"matmul", {{F_BETA, INFINITY}}, INV, "beta is inf: must be finite"},
    {"matmul_batched", {{F_ALPHA, -INFINITY}}, INV, "alpha is -inf"},
    {"scale", {{F_ALPHA, NAN}}, INV, "neat_scale: alpha is nan"},
    {"linear", {{F_ACT, 5}}, INV, "neat_linear_forward: act 5 is not a neat_activation"},
    {"linear", {{F_ACT, -1}}, INV, "act -1 is not"},
    {"act_fwd", {{F_ACT, 99}}, INV, "neat_activation_forward: act 99"},
    {"act_bwd_relu", {{F_ACT, 17}}, INV, "neat_activation_backward: act 17"},
    {"linear_bwd", {{F_ACT, 6}}, INV, "neat_linear_backward: act 6"},
    {"conv", {{F_ACT, 8}}, INV, "neat_conv2d_forward: act 8"},
    {"conv_bwd", {{F_ACT, -3}}, INV, "neat_conv2d_backward: act -3"},
    {"conv", {{F_NULL_DESC}}, INV, "neat_conv2d_forward: desc is NULL"},
    {"conv", {{F_CKH, 0}}, INV, "desc->kernel_h is 0: must be >= 1"},
    {"conv", {{F_CKW, -1}}, INV, "desc->kernel_w is -1"},
    {"conv", {{F_CSH, 0}}, INV, "desc->stride_h is 0: must be >= 1"},
    {"conv", {{F_CSW, -2}}, INV, "desc->stride_w is -2"},
    {"conv", {{F_CPH, -1}}, INV, "desc->pad_h is -1: must be >= 0"},
    {"conv", {{F_CPW, -5}}, INV, "desc->pad_w is -5"},
    {"conv", {{F_CDH, 0}}, INV, "desc->dilation_h is 0"},
    {"conv", {{F_CDW, -1}}, INV, "desc->dilation_w is -1"},
    {"conv", {{F_GROUPS, 0}}, INV, "desc->groups is 0"},
    {"conv", {{F_CPH, 3}}, INV, "padding 3x1 must be smaller than the dilated kernel extent 3x3"},
    {"conv", {{F_CPW, 4}}, INV, "must be smaller than the dilated kernel extent"},
    /* pad 3 is too much for a 3-tap kernel, not once it is dilated to 5 taps: */
    {"conv", {{F_CPH, 3}, {F_CDH, 2}}, SHP, "neat_conv2d_forward: y is 2x6x6x6, expected 2x6x8x6"},
    {"conv", {{F_CDH, 10}}, SHP, "smaller than the dilated kernel 21x3"},
    {"conv", {{F_CDW, 4611686018427387904.0}}, INV, "overflows"},
    {"conv", {{F_GROUPS, 3}}, SHP, "x is 2x4x6x6: 4 channels are not divisible by desc->groups 3"},
    {"conv", {{F_GROUPS, 4}}, SHP, "w is 6x2x3x3: 6 filters are not divisible by desc->groups 4"},
    {"conv", {{F_GROUPS, 1}}, SHP, "w is 6x2x3x3, expected 6x4x3x3"},
    {"conv", {{F_CKH, 5}}, SHP, "expected 6x2x5x3"},
    {"conv", {{F_CSH, 2}}, SHP, "y is 2x6x6x6, expected 2x6x3x6"},
    {"conv", {{F_CLAYOUT, 2}}, INV, "desc layout 2 is neither NEAT_LAYOUT_NCHW (0) nor"},
    {"conv", {{F_CLAYOUT, -1}}, INV, "neat_conv2d_forward: desc layout -1 is neither"},
    /* NCHW tensors given as NHWC: x 2x4x6x6 is N=2, H=4, W=6, C=6 */
    {"conv", {{F_CLAYOUT, 1}}, SHP, "w is 6x2x3x3, expected 6x3x3x3 = [K,kh,kw,C/groups]"},
    {"conv_bwd", {{F_CLAYOUT, 7}}, INV, "neat_conv2d_backward: desc layout 7"},
    {"conv_bwd", {{F_CLAYOUT, 1}}, SHP, "expected 6x3x3x3 = [K,kh,kw,C/groups]"},
    {"conv_bwd", {{F_NULL_DESC}}, INV, "neat_conv2d_backward: desc is NULL"},
    {"conv_bwd", {{F_CSW, 0}}, INV, "desc->stride_w is 0"},
    {"conv_bwd", {{F_CPH, 3}}, INV, "smaller than the dilated kernel extent"},
    {"conv_bwd", {{F_GROUPS, 3}}, SHP, "not divisible by desc->groups 3"},
    {"conv_bwd", {{F_CSH, 2}}, SHP, "dy is 2x6x6x6, expected 2x6x3x6"},
    {"maxpool", {{F_NULL_DESC}}, INV, "neat_maxpool2d: desc is NULL"},
    {"maxpool", {{F_PKH, 0}}, INV, "desc->kernel_h is 0"},
    {"maxpool", {{F_PKW, -2}}, INV, "desc->kernel_w is -2"},
    {"maxpool", {{F_PSH, 0}}, INV, "desc->stride_h is 0"},
    {"maxpool", {{F_PSW, -1}}, INV, "desc->stride_w is -1"},
    {"maxpool", {{F_PPH, -1}}, INV, "desc->pad_h is -1"},
    {"maxpool", {{F_PPW, 2}}, INV, "padding 1x2 must be at most half the kernel 2x2"},
    {"maxpool",
     {{F_PKH, 8}},
     SHP,
     "x is 2x3x5x5: the input padded by 1x1 is smaller than the kernel 8x2"},
    {"maxpool", {{F_PSH, 2}}, SHP, "y is 2x3x6x6, expected 2x3x3x6"},
    {"maxpool", {{F_PLAYOUT, 3}}, INV, "neat_maxpool2d: desc layout 3 is neither"},
    /* x 2x3x5x5 as NHWC: H=3, W=5, C=5 */
    {"maxpool", {{F_PLAYOUT, 1}}, SHP, "y is 2x3x6x6, expected 2x4x6x5 = [N,P,Q,C]"},
    {"maxpool_bwd", {{F_PLAYOUT, 2}}, INV, "neat_maxpool2d_backward: desc layout 2"},
    {"maxpool_bwd", {{F_PLAYOUT, 1}}, SHP, "expected 2x4x6x5 = [N,P,Q,C] of x and desc"},
    {"maxpool_bwd", {{F_NULL_DESC}}, INV, "neat_maxpool2d_backward: desc is NULL"},
    {"maxpool_bwd", {{F_PSH, 0}}, INV, "desc->stride_h is 0"},
    {"maxpool_bwd", {{F_PPH, 2}}, INV, "at most half the kernel"},
    {"maxpool_bwd", {{F_PSW, 2}}, SHP, "dy is 2x3x6x6, expected 2x3x6x3"},
    {"sum_axis", {{F_AXIS, -1}}, INV, "neat_sum_axis: axis -1 is outside [0, 3) for x 3x4x5"},
    {"sum_axis", {{F_AXIS, 3}}, INV, "axis 3 is outside [0, 3)"},
    {"sum_axis", {{F_AXIS, 0}}, SHP, "y is 3x5, expected 4x5 or 1x4x5"},
    {"sgd", {{F_NULL_P}}, INV, "neat_sgd_update: p is NULL"},
    {"sgd", {{F_MOM, -0.5}}, INV, "p->momentum is -0.5: must be >= 0"},
    {"sgd", {{F_MOM, NAN}}, INV, "p->momentum is nan: must be finite"},
    {"sgd", {{F_SGD_WD, -1}}, INV, "p->weight_decay is -1"},
    {"sgd", {{F_SGD_WD, INFINITY}}, INV, "p->weight_decay is inf"},
    {"sgd", {{F_MOM, 0}, {F_NESTEROV, 1}}, INV, "p->nesterov needs p->momentum > 0"},
    {"sgd_plain", {{F_NESTEROV, 1}}, INV, "nesterov needs"},
    {"adam", {{F_NULL_P}}, INV, "neat_adam_update: p is NULL"},
    {"adam", {{F_B1, 1.0}}, INV, "p->beta1 is 1: must be in [0, 1)"},
    {"adam", {{F_B1, -0.1}}, INV, "p->beta1 is -0.1"},
    {"adam", {{F_B2, 1.5}}, INV, "p->beta2 is 1.5"},
    {"adam", {{F_B2, NAN}}, INV, "p->beta2 is nan"},
    {"adam", {{F_EPS, 0}}, INV, "p->eps is 0: must be > 0"},
    {"adam", {{F_EPS, -1e-8}}, INV, "p->eps is -1e-08"},
    {"adam", {{F_EPS, INFINITY}}, INV, "p->eps is inf: must be finite"},
    {"adam", {{F_ADAM_WD, -0.5}}, INV, "p->weight_decay is -0.5"},
    {"sgd_mixed", {{F_NULL_P}}, INV, "neat_sgd_update_mixed: p is NULL"},
    {"sgd_mixed", {{F_MOM, -0.5}}, INV, "neat_sgd_update_mixed: p->momentum is -0.5"},
    {"sgd_mixed", {{F_SGD_WD, NAN}}, INV, "p->weight_decay is nan: must be finite"},
    {"sgd_mixed", {{F_MOM, 0}, {F_NESTEROV, 1}}, INV, "p->nesterov needs p->momentum > 0"},
    {"adam_mixed", {{F_NULL_P}}, INV, "neat_adam_update_mixed: p is NULL"},
    {"adam_mixed", {{F_B1, 1.0}}, INV, "neat_adam_update_mixed: p->beta1 is 1: must be in [0, 1)"},
    {"adam_mixed", {{F_B2, -1}}, INV, "p->beta2 is -1"},
    {"adam_mixed", {{F_EPS, 0}}, INV, "p->eps is 0: must be > 0"},
    {"adam_mixed", {{F_ADAM_WD, INFINITY}}, INV, "p->weight_decay is inf"},
    {"loss_scale_check",
     {{F_LIST_N, -2}},
     INV,
     "neat_loss_scale_check: n is -2: must be in [0, 4096]"},
    {"loss_scale_check", {{F_LIST_N, 4097}}, INV, "n is 4097: must be in [0, 4096]"},
    {"loss_scale_check", {{F_NULL_LIST}}, INV, "neat_loss_scale_check: tensors is NULL"},
    {"loss_scale_check", {{F_NULL_LIST}, {F_LIST_N, -1}}, NEAT_OK, ""}, /* n = 0: NULL is fine */
    {"loss_scale_update", {{F_NULL_P}}, INV, "neat_loss_scale_update: p is NULL"},
    {"loss_scale_update", {{F_GROWTH, 0.5}}, INV, "p->growth_factor is 0.5: must be >= 1"},
    {"loss_scale_update", {{F_GROWTH, NAN}}, INV, "p->growth_factor is nan: must be finite"},
    {"loss_scale_update", {{F_GROWTH, INFINITY}}, INV, "p->growth_factor is inf: must be finite"},
    {"loss_scale_update", {{F_BACKOFF, 0}}, INV, "p->backoff_factor is 0: must be in (0, 1]"},
    {"loss_scale_update", {{F_BACKOFF, 1.5}}, INV, "p->backoff_factor is 1.5"},
    {"loss_scale_update", {{F_BACKOFF, NAN}}, INV, "p->backoff_factor is nan"},
    {"loss_scale_update", {{F_BACKOFF, -0.5}}, INV, "p->backoff_factor is -0.5"},
    {"loss_scale_update", {{F_INTERVAL, 0}}, INV, "p->growth_interval is 0: must be >= 1"},
    {"loss_scale_update", {{F_INTERVAL, -7}}, INV, "p->growth_interval is -7"},
    {"loss_scale_update", {{F_GROWTH, 1}, {F_BACKOFF, 1}}, NEAT_OK, ""}, /* the bounds */
};
#define NOPTION_CASES ((int)(sizeof OPTION_CASES / sizeof OPTION_CASES[0]))

/* ---- the derived cases ------------------------------------------------------------------ */

/* Run the op of fx with tensors t and options o against a buffer of kind cb_kind. */
enum { CB_FRESH, CB_NULL, CB_DESTROYED, CB_COMMITTED, CB_FOREIGN };
typedef struct fixture {
    const op_spec *s;
    neat_tensor *t[MAXT];
    neat_tensor *outs[MAXT];
    int nouts;
} fixture;

static void expect(const fixture *fx, neat_tensor *const *t, const opts *o, int cb_kind,
                   neat_status want, const char *sub, const char *what) {
    char label[256];
    snprintf(label, sizeof label, "%s [%s]", fx->s->label, what);
    neat_cmdbuf *cb = err_case_begin(fx->outs, fx->nouts), *target = cb, *other = NULL;
    switch (cb_kind) {
    case CB_NULL: target = NULL; break;
    case CB_DESTROYED:
        neat_cmdbuf_create(err_dev, &other);
        neat_cmdbuf_destroy(other);
        target = other;
        break;
    case CB_COMMITTED:
        neat_cmdbuf_create(err_dev, &other);
        neat_fill(other, err_sentinel, 42.0f);
        CHECK_OK(neat_cmdbuf_commit(other), label);
        CHECK_OK(neat_cmdbuf_wait(other), label);
        target = other;
        break;
    case CB_FOREIGN: target = (neat_cmdbuf *)err_sentinel; break;
    }
    neat_status st = fx->s->call(target, t, o);
    if (cb_kind == CB_COMMITTED) {
        int64_t n = -1;
        neat_cmdbuf_op_count(other, &n);
        CHECK(n == 1, "%s: the committed buffer took an op", label);
        neat_cmdbuf_destroy(other);
    }
    err_case_end(cb, st, want, sub, label, fx->outs, fx->nouts,
                 want == NEAT_OK && cb_kind == CB_FRESH ? 2 : 1);
}

static void fixture_open(fixture *fx, const op_spec *s) {
    fx->s = s;
    fx->nouts = 0;
    for (int i = 0; i < s->nt; i++) {
        /* Inputs hold 1: a valid class index (labels), a valid [lr, step] (hyper). */
        fx->t[i] = err_make_filled(s->a[i].ndim, s->a[i].shape, 1.0f);
        if (s->a[i].flags & OUTPUT) fx->outs[fx->nouts++] = fx->t[i];
    }
}

static void fixture_close(fixture *fx) {
    for (int i = 0; i < fx->s->nt; i++) neat_tensor_destroy(fx->t[i]);
}

/* Every derived case of one op, then its option rows. */
static void run_spec(const op_spec *s) {
    fixture fx;
    fixture_open(&fx, s);
    neat_tensor *t[MAXT];
    memcpy(t, fx.t, sizeof t);
    char what[128], sub[128];
    expect(&fx, t, &s->o, CB_FRESH, NEAT_OK, "", "the valid call");

    snprintf(sub, sizeof sub, "%s: cb is NULL", s->fn);
    expect(&fx, t, &s->o, CB_NULL, NEAT_ERR_INVALID_ARGUMENT, sub, "cb NULL");
    snprintf(sub, sizeof sub, "%s: cb is not a live command buffer", s->fn);
    expect(&fx, t, &s->o, CB_DESTROYED, NEAT_ERR_INVALID_HANDLE, sub, "cb destroyed");
    expect(&fx, t, &s->o, CB_FOREIGN, NEAT_ERR_INVALID_HANDLE, sub, "cb is a tensor handle");
    snprintf(sub, sizeof sub, "%s: cb was already committed", s->fn);
    expect(&fx, t, &s->o, CB_COMMITTED, NEAT_ERR_INVALID_ARGUMENT, sub, "cb committed");

    for (int i = 0; i < s->nt; i++) {
        const targ *a = &s->a[i];
        snprintf(what, sizeof what, "%s NULL", a->name);
        snprintf(sub, sizeof sub, "%s: %s is NULL", s->fn, a->name);
        t[i] = NULL;
        expect(&fx, t, &s->o, CB_FRESH, (a->flags & REQ) ? NEAT_ERR_INVALID_ARGUMENT : NEAT_OK, sub,
               what);

        snprintf(what, sizeof what, "%s destroyed", a->name);
        snprintf(sub, sizeof sub, "%s: %s is not a live tensor", s->fn, a->name);
        neat_tensor *gone = err_make(err_dev, a->ndim, a->shape);
        neat_tensor_destroy(gone);
        t[i] = gone;
        expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_INVALID_HANDLE, sub, what);

        snprintf(what, sizeof what, "%s is a device handle", a->name);
        t[i] = (neat_tensor *)err_dev;
        expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_INVALID_HANDLE, sub, what);

        snprintf(what, sizeof what, "%s of another device", a->name);
        snprintf(sub, sizeof sub, "%s: %s belongs to another device", s->fn, a->name);
        t[i] = err_make(err_dev2, a->ndim, a->shape);
        expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_DEVICE_MISMATCH, sub, what);
        neat_tensor_destroy(t[i]);

        if (!(a->flags & ANY_SHAPE)) {
            snprintf(sub, sizeof sub, "%s: ", s->fn);
            for (int d = 0; d < a->ndim; d++) {
                if (a->free_dims & (1u << d)) continue;
                int64_t shape[4];
                memcpy(shape, a->shape, sizeof shape);
                shape[d] += 1;
                snprintf(what, sizeof what, "%s dimension %d one larger", a->name, d);
                t[i] = err_make(err_dev, a->ndim, shape);
                expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_SHAPE_MISMATCH, sub, what);
                neat_tensor_destroy(t[i]);
            }
            if (!(a->flags & NUMEL_ONLY)) {
                int64_t shape[4] = {1, 1, 1, 1};
                memcpy(shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
                int nd = a->ndim < 4 ? a->ndim + 1 : 3; /* a trailing 1 added, or one dropped */
                snprintf(what, sizeof what, "%s as %d-D", a->name, nd);
                t[i] = err_make(err_dev, nd, shape);
                expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_SHAPE_MISMATCH, sub, what);
                neat_tensor_destroy(t[i]);
            }
        }
        t[i] = fx.t[i];
    }

    for (int r = 0; r < NOPTION_CASES; r++) {
        const option_case *c = &OPTION_CASES[r];
        if (strcmp(c->spec, s->label) != 0) continue;
        opts o = s->o;
        set_field(&o, c->set[0].f, c->set[0].v);
        set_field(&o, c->set[1].f, c->set[1].v);
        snprintf(what, sizeof what, "option row %d", r);
        expect(&fx, t, &o, CB_FRESH, c->want, c->msg, what);
    }
    fixture_close(&fx);
}

/* ---- element types of the mixed-precision calls ------------------------------------------
 * State, hyper and scaler float32 (each named with its dtype); grad and param any dtype;
 * neat_loss_scale's x and y of one dtype; the plain optimizers float32 only. */

static neat_tensor *typed(neat_dtype dt, int64_t n) {
    neat_tensor *t = NULL;
    CHECK_OK(neat_tensor_create_typed(err_dev, dt, 1, &n, 1, &t), "neat_tensor_create_typed");
    return t;
}

/* One call: status and message; the float32 outputs outs[] untouched when rejected. */
#define DT_CASE(want, sub, nouts, outs, call)                                                      \
    do {                                                                                           \
        neat_tensor *const *o_ = (outs);                                                           \
        neat_cmdbuf *cb = err_case_begin(o_, (nouts));                                             \
        neat_status st_ = (call);                                                                  \
        err_case_end(cb, st_, (want), (sub), #call, o_, (nouts), (want) == NEAT_OK ? 2 : 1);       \
    } while (0)
#define DT NEAT_ERR_DTYPE_MISMATCH

static void test_mixed_dtypes(void) {
    neat_tensor *hyper = err_make_filled(1, (int64_t[]){2}, 1.0f), *hyper_b = typed(NEAT_BF16, 2);
    neat_tensor *scaler = err_make_filled(1, (int64_t[]){3}, 0.0f), *scaler_h = typed(NEAT_F16, 3);
    neat_tensor *scaler4 = err_make_filled(1, (int64_t[]){4}, 0.0f),
                *scaler_b = typed(NEAT_BF16, 3);
    neat_tensor *w = err_make_filled(1, (int64_t[]){6}, 1.0f),
                *s1 = err_make_filled(1, (int64_t[]){6}, 0.0f);
    neat_tensor *s2 = err_make_filled(1, (int64_t[]){6}, 0.0f);
    neat_tensor *wb = typed(NEAT_BF16, 6), *gb = typed(NEAT_BF16, 6), *gh = typed(NEAT_F16, 6);
    neat_tensor *pb = typed(NEAT_BF16, 6), *ph = typed(NEAT_F16, 6), *sh = typed(NEAT_F16, 6);
    neat_sgd_params sp = {0.9f, 0, 0};
    neat_adam_params ap = {0.9f, 0.999f, 1e-8f, 0};
    neat_tensor *outs[3] = {w, s1, s2};

    DT_CASE(DT, "neat_sgd_update_mixed: master is bf16: must be f32", 1, outs + 1,
            neat_sgd_update_mixed(cb, &sp, hyper, scaler, wb, gb, s1, pb));
    DT_CASE(DT, "neat_sgd_update_mixed: velocity is f16: must be f32", 1, outs,
            neat_sgd_update_mixed(cb, &sp, hyper, scaler, w, gb, sh, pb));
    DT_CASE(DT, "neat_sgd_update_mixed: hyper is bf16: must be f32", 2, outs,
            neat_sgd_update_mixed(cb, &sp, hyper_b, scaler, w, gb, s1, pb));
    DT_CASE(DT, "neat_sgd_update_mixed: scaler is f16: must be f32", 2, outs,
            neat_sgd_update_mixed(cb, &sp, hyper, scaler_h, w, gb, s1, pb));
    DT_CASE(NEAT_ERR_SHAPE_MISMATCH,
            "neat_sgd_update_mixed: scaler is 4: must have exactly 3 elements", 2, outs,
            neat_sgd_update_mixed(cb, &sp, hyper, scaler4, w, gb, s1, pb));
    DT_CASE(NEAT_OK, "", 0, outs, neat_sgd_update_mixed(cb, &sp, hyper, scaler, w, gb, s1, ph));
    DT_CASE(NEAT_OK, "", 0, outs, neat_sgd_update_mixed(cb, &sp, hyper, NULL, w, gh, s1, NULL));
    DT_CASE(DT, "neat_adam_update_mixed: m is f16: must be f32", 2, outs,
            neat_adam_update_mixed(cb, &ap, hyper, scaler, w, gh, sh, s2, pb));
    DT_CASE(DT, "neat_adam_update_mixed: v is f16: must be f32", 2, outs,
            neat_adam_update_mixed(cb, &ap, hyper, scaler, w, gh, s1, sh, pb));
    DT_CASE(DT, "neat_adam_update_mixed: master is bf16", 2, outs + 1,
            neat_adam_update_mixed(cb, &ap, hyper, NULL, wb, gh, s1, s2, NULL));
    DT_CASE(NEAT_OK, "", 0, outs,
            neat_adam_update_mixed(cb, &ap, hyper, scaler, w, gh, s1, s2, pb));
    /* the plain calls stay float32 only */
    DT_CASE(
        DT,
        "neat_sgd_update: the tensors are f32, f32, f32, bf16; the op takes float32 tensors only",
        2, outs, neat_sgd_update(cb, &sp, hyper, w, gb, s1));
    DT_CASE(DT, "neat_adam_update: the tensors are f32, f32, f32, f32, f16; the op takes float32",
            3, outs, neat_adam_update(cb, &ap, hyper, w, gh, s1, s2));
    DT_CASE(DT, "neat_loss_scale: x is bf16, y is f16: must be of one dtype", 0, outs,
            neat_loss_scale(cb, scaler, gb, gh));
    DT_CASE(DT, "neat_loss_scale: x is f32, y is bf16", 0, outs,
            neat_loss_scale(cb, scaler, w, gb));
    DT_CASE(DT, "neat_loss_scale: scaler is f16: must be f32", 1, outs,
            neat_loss_scale(cb, scaler_h, w, w));
    DT_CASE(NEAT_OK, "", 0, outs, neat_loss_scale(cb, scaler, gh, gh));
    DT_CASE(DT, "neat_loss_scale_check: scaler is f16: must be f32", 0, outs,
            neat_loss_scale_check(cb, (const neat_tensor *[]){gb, gh, w}, 3, scaler_h));
    DT_CASE(NEAT_ERR_SHAPE_MISMATCH, "neat_loss_scale_check: scaler is 4: must have exactly 3", 0,
            outs, neat_loss_scale_check(cb, (const neat_tensor *[]){gb}, 1, scaler4));
    DT_CASE(NEAT_OK, "", 0, outs,
            neat_loss_scale_check(cb, (const neat_tensor *[]){gb, gh, w, gb}, 4, scaler));
    DT_CASE(DT, "neat_loss_scale_update: scaler is bf16: must be f32", 0, outs,
            neat_loss_scale_update(cb, &(neat_loss_scale_params){2, 0.5f, 10}, scaler_b));
    neat_tensor *all[] = {hyper, hyper_b, scaler, scaler_h, scaler4, scaler_b, w, s1,
                          s2,    wb,      gb,     gh,       pb,      ph,       sh};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) neat_tensor_destroy(all[i]);
}

int main(void) {
    if (!err_open()) return nt_finish("errors_ops");
    for (int r = 0; r < NOPTION_CASES; r++) { /* a row naming no spec would never run */
        int found = 0;
        for (int i = 0; i < NSPECS; i++) found |= strcmp(SPECS[i].label, OPTION_CASES[r].spec) == 0;
        CHECK(found, "option row %d names no spec \"%s\"", r, OPTION_CASES[r].spec);
    }
    for (int i = 0; i < NSPECS; i++) run_spec(&SPECS[i]);
    test_mixed_dtypes();
    err_close();
    printf("errors_ops: %d op calls checked (%d op descriptions, %d option rows)\n", err_ncases,
           NSPECS, NOPTION_CASES);
    return nt_finish("errors_ops");
}
