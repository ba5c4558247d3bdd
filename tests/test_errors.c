/*
 * test_errors.c — the error contract, on the CPU device.
 *
 * Every op is described once (op_spec: its tensor arguments with valid shapes, its valid
 * options). From that description the suite derives, for every tensor argument: NULL, a
 * destroyed handle, a handle of another kind, a tensor of another device, a wrong size in
 * each dimension and a wrong rank; and for the command buffer: NULL, destroyed, committed.
 * Option rows (OPTION_CASES) break one or two options each; alias and acceptance cases are
 * listed by hand. Every rejected call is recorded into a buffer that also holds one valid
 * op (a fill of a sentinel); the buffer is committed and waited, then the op's outputs must
 * still hold their pattern bit for bit, the buffer must hold only the valid op, and the
 * sentinel must have been filled. Each assertion checks the exact status and a substring of
 * neat_last_error().
 */
#include "harness.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The tables below leave trailing fields (free_dims, a second option) zero on purpose. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#ifdef __SANITIZE_ADDRESS__
/* test_tensors asks for 32 TiB and expects OUT_OF_MEMORY: let ASan's allocator say no
 * instead of aborting the process. */
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }
#endif

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
    return neat_matmul(cb, t[0], t[1], t[2], o->alpha, o->beta, o->trans_a, o->trans_b); }
static neat_status c_matmul_b(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_matmul_batched(cb, t[0], t[1], t[2], o->alpha, o->beta, o->trans_a, o->trans_b); }
static neat_status c_add(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_add(cb, t[0], t[1], t[2]); }
static neat_status c_scale(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_scale(cb, t[0], o->alpha, t[1]); }
static neat_status c_fill(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_fill(cb, t[0], o->alpha); }
static neat_status c_linear(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_linear_forward(cb, t[0], t[1], t[2], o->act, t[3]); }
static neat_status c_conv(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_conv2d_forward(cb, CONV(o), t[0], t[1], t[2], o->act, t[3]); }
static neat_status c_pool(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_maxpool2d(cb, POOL(o), t[0], t[1]); }
static neat_status c_sum_all(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sum_all(cb, t[0], t[1]); }
static neat_status c_sum_axis(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sum_axis(cb, t[0], o->axis, t[1]); }
static neat_status c_softmax(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax(cb, t[0], t[1]); }
static neat_status c_act_fwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_activation_forward(cb, o->act, t[0], t[1]); }
static neat_status c_act_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_activation_backward(cb, o->act, t[0], t[1], t[2], t[3]); }
static neat_status c_linear_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_linear_backward(cb, t[0], t[1], t[2], t[3], t[4], o->act, t[5], t[6], t[7],
                                o->accumulate); }
static neat_status c_conv_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_conv2d_backward(cb, CONV(o), t[0], t[1], t[2], t[3], t[4], o->act, t[5], t[6],
                                t[7], o->accumulate); }
static neat_status c_pool_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_maxpool2d_backward(cb, POOL(o), t[0], t[1], t[2]); }
static neat_status c_softmax_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_backward(cb, t[0], t[1], t[2]); }
static neat_status c_xent(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_cross_entropy(cb, t[0], t[1], t[2]); }
static neat_status c_xent_bwd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_softmax_cross_entropy_backward(cb, t[0], t[1], t[2]); }
static neat_status c_sgd(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_sgd_update(cb, o->null_params ? NULL : &o->sgd, t[0], t[1], t[2], t[3]); }
static neat_status c_adam(neat_cmdbuf *cb, neat_tensor *const *t, const opts *o) {
    return neat_adam_update(cb, o->null_params ? NULL : &o->adam, t[0], t[1], t[2], t[3], t[4]); }

/* ---- the ops, with valid arguments ----------------------------------------------------
 * Shapes are picked so that one more in any checked dimension makes the call invalid
 * (stride 1 where a size feeds an output size). */
#define CONV_G2 {.kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, \
                 .pad_w = 1, .dilation_h = 1, .dilation_w = 1, .groups = 2}
#define POOL_2 {.kernel_h = 2, .kernel_w = 2, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1}
static const op_spec SPECS[] = {
    {"matmul", "neat_matmul", c_matmul, {.alpha = 1, .beta = 0.5f}, 3,
     {{"a", 2, {3, 5}, REQ}, {"b", 2, {5, 4}, REQ}, {"c", 2, {3, 4}, REQ | OUTPUT}}},
    {"matmul_t", "neat_matmul", c_matmul, {.alpha = 1, .trans_a = 1, .trans_b = 1}, 3,
     {{"a", 2, {5, 3}, REQ}, {"b", 2, {4, 5}, REQ}, {"c", 2, {3, 4}, REQ | OUTPUT}}},
    {"matmul_batched", "neat_matmul_batched", c_matmul_b, {.alpha = 2, .beta = 0}, 3,
     {{"a", 3, {2, 3, 5}, REQ}, {"b", 3, {2, 5, 4}, REQ}, {"c", 3, {2, 3, 4}, REQ | OUTPUT}}},
    {"add", "neat_add", c_add, {0}, 3,
     {{"a", 2, {3, 4}, REQ}, {"b", 2, {3, 4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"add_row", "neat_add", c_add, {0}, 3,
     {{"a", 2, {3, 4}, REQ}, {"b", 1, {4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"add_row2", "neat_add", c_add, {0}, 3,
     {{"a", 3, {2, 3, 4}, REQ}, {"b", 2, {1, 4}, REQ}, {"out", 3, {2, 3, 4}, REQ | OUTPUT}}},
    {"scale", "neat_scale", c_scale, {.alpha = 2}, 2,
     {{"x", 2, {3, 4}, REQ}, {"out", 2, {3, 4}, REQ | OUTPUT}}},
    {"fill", "neat_fill", c_fill, {.alpha = 3}, 1, {{"t", 2, {3, 4}, REQ | OUTPUT | ANY_SHAPE}}},
    {"linear", "neat_linear_forward", c_linear, {.act = NEAT_ACT_RELU}, 4,
     {{"x", 2, {3, 5}, REQ}, {"w", 2, {4, 5}, REQ}, {"b", 1, {4}, 0},
      {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"conv", "neat_conv2d_forward", c_conv, {.act = NEAT_ACT_RELU, .conv = CONV_G2}, 4,
     {{"x", 4, {2, 4, 6, 6}, REQ}, {"w", 4, {6, 2, 3, 3}, REQ}, {"b", 1, {6}, 0},
      {"y", 4, {2, 6, 6, 6}, REQ | OUTPUT}}},
    {"maxpool", "neat_maxpool2d", c_pool, {.pool = POOL_2}, 2,
     {{"x", 4, {2, 3, 5, 5}, REQ}, {"y", 4, {2, 3, 6, 6}, REQ | OUTPUT}}},
    {"sum_all", "neat_sum_all", c_sum_all, {0}, 2,
     {{"x", 2, {3, 4}, REQ | ANY_SHAPE}, {"y", 1, {1}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"sum_axis", "neat_sum_axis", c_sum_axis, {.axis = 1}, 2,
     {{"x", 3, {3, 4, 5}, REQ, 1u << 1}, {"y", 2, {3, 5}, REQ | OUTPUT}}},
    {"sum_axis_kept", "neat_sum_axis", c_sum_axis, {.axis = 1}, 2,
     {{"x", 3, {3, 4, 5}, REQ, 1u << 1}, {"y", 3, {3, 1, 5}, REQ | OUTPUT}}},
    {"softmax", "neat_softmax", c_softmax, {0}, 2,
     {{"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_fwd", "neat_activation_forward", c_act_fwd, {.act = NEAT_ACT_TANH}, 2,
     {{"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_bwd_relu", "neat_activation_backward", c_act_bwd, {.act = NEAT_ACT_RELU}, 4,
     {{"x", 2, {3, 4}, 0}, {"y", 2, {3, 4}, REQ}, {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"act_bwd_gelu", "neat_activation_backward", c_act_bwd, {.act = NEAT_ACT_GELU}, 4,
     {{"x", 2, {3, 4}, REQ}, {"y", 2, {3, 4}, 0}, {"dy", 2, {3, 4}, REQ},
      {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"linear_bwd", "neat_linear_backward", c_linear_bwd, {.act = NEAT_ACT_SIGMOID}, 8,
     {{"x", 2, {3, 5}, REQ}, {"w", 2, {4, 5}, REQ}, {"b", 1, {4}, 0}, {"y", 2, {3, 4}, REQ},
      {"dy", 2, {3, 4}, REQ}, {"dx", 2, {3, 5}, OUTPUT}, {"dw", 2, {4, 5}, OUTPUT},
      {"db", 1, {4}, OUTPUT}}},
    {"linear_bwd_gelu", "neat_linear_backward", c_linear_bwd,
     {.act = NEAT_ACT_GELU, .accumulate = 1}, 8,
     {{"x", 2, {3, 5}, REQ}, {"w", 2, {4, 5}, REQ}, {"b", 1, {4}, 0}, {"y", 2, {3, 4}, 0},
      {"dy", 2, {3, 4}, REQ}, {"dx", 2, {3, 5}, OUTPUT}, {"dw", 2, {4, 5}, OUTPUT},
      {"db", 1, {4}, OUTPUT}}},
    {"conv_bwd", "neat_conv2d_backward", c_conv_bwd, {.act = NEAT_ACT_RELU, .conv = CONV_G2}, 8,
     {{"x", 4, {2, 4, 6, 6}, REQ}, {"w", 4, {6, 2, 3, 3}, REQ}, {"b", 1, {6}, 0},
      {"y", 4, {2, 6, 6, 6}, REQ}, {"dy", 4, {2, 6, 6, 6}, REQ},
      {"dx", 4, {2, 4, 6, 6}, OUTPUT}, {"dw", 4, {6, 2, 3, 3}, OUTPUT}, {"db", 1, {6}, OUTPUT}}},
    {"maxpool_bwd", "neat_maxpool2d_backward", c_pool_bwd, {.pool = POOL_2}, 3,
     {{"x", 4, {2, 3, 5, 5}, REQ}, {"dy", 4, {2, 3, 6, 6}, REQ},
      {"dx", 4, {2, 3, 5, 5}, REQ | OUTPUT}}},
    {"softmax_bwd", "neat_softmax_backward", c_softmax_bwd, {0}, 3,
     {{"y", 2, {3, 4}, REQ}, {"dy", 2, {3, 4}, REQ}, {"dx", 2, {3, 4}, REQ | OUTPUT}}},
    {"xent", "neat_softmax_cross_entropy", c_xent, {0}, 3,
     {{"logits", 2, {3, 4}, REQ, 1u << 1}, {"labels", 1, {3}, REQ},
      {"loss", 1, {1}, REQ | OUTPUT | NUMEL_ONLY}}},
    {"xent_bwd", "neat_softmax_cross_entropy_backward", c_xent_bwd, {0}, 3,
     {{"logits", 2, {3, 4}, REQ}, {"labels", 1, {3}, REQ}, {"dlogits", 2, {3, 4}, REQ | OUTPUT}}},
    {"sgd", "neat_sgd_update", c_sgd, {.sgd = {.momentum = 0.9f, .weight_decay = 0.01f,
                                                .nesterov = 1}}, 4,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY}, {"param", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ}, {"velocity", 2, {3, 4}, REQ | OUTPUT}}},
    {"sgd_plain", "neat_sgd_update", c_sgd, {.sgd = {0}}, 4,
     {{"hyper", 2, {1, 2}, REQ | NUMEL_ONLY}, {"param", 1, {7}, REQ | OUTPUT},
      {"grad", 1, {7}, REQ}, {"velocity", 1, {7}, 0}}},
    {"adam", "neat_adam_update", c_adam, {.adam = {0.9f, 0.999f, 1e-8f, 0.01f}}, 5,
     {{"hyper", 1, {2}, REQ | NUMEL_ONLY}, {"param", 2, {3, 4}, REQ | OUTPUT},
      {"grad", 2, {3, 4}, REQ}, {"m", 2, {3, 4}, REQ | OUTPUT}, {"v", 2, {3, 4}, REQ | OUTPUT}}},
};
#define NSPECS ((int)(sizeof SPECS / sizeof SPECS[0]))

/* ---- options broken one or two at a time --------------------------------------------- */

enum field { F_NONE, F_ALPHA, F_BETA, F_ACT, F_AXIS, F_NULL_DESC, F_NULL_P, F_CKH, F_CKW, F_CSH,
             F_CSW, F_CPH, F_CPW, F_CDH, F_CDW, F_GROUPS, F_PKH, F_PKW, F_PSH, F_PSW, F_PPH,
             F_PPW, F_MOM, F_SGD_WD, F_NESTEROV, F_B1, F_B2, F_EPS, F_ADAM_WD };

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
    }
}

typedef struct option_case {
    const char *spec;
    struct { int f; double v; } set[2];
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
    {"maxpool", {{F_PKH, 8}}, SHP, "x is 2x3x5x5: the padded input 7x7 is smaller than the kernel 8x2"},
    {"maxpool", {{F_PSH, 2}}, SHP, "y is 2x3x6x6, expected 2x3x3x6"},
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
};
#define NOPTION_CASES ((int)(sizeof OPTION_CASES / sizeof OPTION_CASES[0]))

/* ---- the checker ------------------------------------------------------------------------ */

static neat_device *dev, *dev2; /* two CPU devices: tensors of dev2 are foreign to dev */
static neat_tensor *sentinel;   /* [4], set to 42 by the valid op of every buffer */

static neat_tensor *make(neat_device *d, int ndim, const int64_t *shape) {
    neat_tensor *t = NULL;
    neat_status st = neat_tensor_create(d, ndim, shape, &t);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_create (setup)");
    return t;
}

static neat_tensor *make_filled(int ndim, const int64_t *shape, float value) {
    neat_tensor *t = make(dev, ndim, shape);
    int64_t n = 0;
    neat_tensor_numel(t, &n);
    float *h = malloc(sizeof(float) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) h[i] = value;
    neat_status st = neat_tensor_write(t, h, n);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_write (setup)");
    free(h);
    return t;
}

static int ncases; /* op calls checked through case_end */

static float pattern_value(int k, int64_t j) { return 1000.0f + 16.0f * k + 0.25f * (float)(j % 64); }

/* Write each output's pattern, zero the sentinel, and open a buffer holding the valid op. */
static neat_cmdbuf *case_begin(neat_tensor *const *outs, int nouts) {
    for (int k = 0; k < nouts; k++) {
        int64_t n = 0;
        neat_tensor_numel(outs[k], &n);
        float *h = malloc(sizeof(float) * (size_t)(n + 1));
        for (int64_t j = 0; j < n; j++) h[j] = pattern_value(k, j);
        neat_status st = neat_tensor_write(outs[k], h, n);
        if (st != NEAT_OK) CHECK_OK(st, "pattern write (setup)");
        free(h);
    }
    static const float zeros[4];
    neat_tensor_write(sentinel, zeros, 4);
    neat_cmdbuf *cb = NULL;
    neat_status st = neat_cmdbuf_create(dev, &cb);
    if (st != NEAT_OK) CHECK_OK(st, "neat_cmdbuf_create (setup)");
    st = neat_fill(cb, sentinel, 42.0f);
    if (st != NEAT_OK) CHECK_OK(st, "neat_fill of the sentinel (setup)");
    return cb;
}

/* Check the call's status and message, that cb holds `want_ops` ops, that the buffer runs,
 * that a rejected call left every output's pattern bit for bit, and that the valid op ran. */
static void case_end(neat_cmdbuf *cb, neat_status st, neat_status want, const char *sub,
                     const char *what, neat_tensor *const *outs, int nouts, int64_t want_ops) {
    ncases++;
    CHECK_STATUS(st, want, what);
    if (want != NEAT_OK)
        CHECK(strstr(neat_last_error(), sub) != NULL, "%s: message \"%s\" lacks \"%s\"", what,
              neat_last_error(), sub);
    int64_t nops = -1;
    neat_cmdbuf_op_count(cb, &nops);
    CHECK(nops == want_ops, "%s: buffer holds %lld ops, want %lld", what, (long long)nops,
          (long long)want_ops);
    CHECK_OK(neat_cmdbuf_commit(cb), what);
    CHECK_OK(neat_cmdbuf_wait(cb), what);
    if (want != NEAT_OK) {
        for (int k = 0; k < nouts; k++) {
            int64_t n = 0;
            neat_tensor_numel(outs[k], &n);
            float *got = malloc(sizeof(float) * (size_t)(n + 1)), *exp = malloc(sizeof(float) * (size_t)(n + 1));
            for (int64_t j = 0; j < n; j++) exp[j] = pattern_value(k, j);
            neat_status rs = neat_tensor_read(outs[k], got, n);
            CHECK(rs == NEAT_OK && memcmp(got, exp, sizeof(float) * (size_t)n) == 0,
                  "%s: output %d was touched by a rejected call", what, k);
            free(got);
            free(exp);
        }
    }
    float s[4] = {0};
    neat_tensor_read(sentinel, s, 4);
    CHECK(s[0] == 42 && s[1] == 42 && s[2] == 42 && s[3] == 42,
          "%s: the valid op of the buffer did not run", what);
    neat_cmdbuf_destroy(cb);
}

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
    neat_cmdbuf *cb = case_begin(fx->outs, fx->nouts), *target = cb, *other = NULL;
    switch (cb_kind) {
    case CB_NULL: target = NULL; break;
    case CB_DESTROYED:
        neat_cmdbuf_create(dev, &other);
        neat_cmdbuf_destroy(other);
        target = other;
        break;
    case CB_COMMITTED:
        neat_cmdbuf_create(dev, &other);
        neat_fill(other, sentinel, 42.0f);
        CHECK_OK(neat_cmdbuf_commit(other), label);
        CHECK_OK(neat_cmdbuf_wait(other), label);
        target = other;
        break;
    case CB_FOREIGN: target = (neat_cmdbuf *)sentinel; break;
    }
    neat_status st = fx->s->call(target, t, o);
    if (cb_kind == CB_COMMITTED) {
        int64_t n = -1;
        neat_cmdbuf_op_count(other, &n);
        CHECK(n == 1, "%s: the committed buffer took an op", label);
        neat_cmdbuf_destroy(other);
    }
    case_end(cb, st, want, sub, label, fx->outs, fx->nouts,
             want == NEAT_OK && cb_kind == CB_FRESH ? 2 : 1);
}

static void fixture_open(fixture *fx, const op_spec *s) {
    fx->s = s;
    fx->nouts = 0;
    for (int i = 0; i < s->nt; i++) {
        /* Inputs hold 1: a valid class index (labels), a valid [lr, step] (hyper). */
        fx->t[i] = make_filled(s->a[i].ndim, s->a[i].shape, 1.0f);
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
        expect(&fx, t, &s->o, CB_FRESH, (a->flags & REQ) ? NEAT_ERR_INVALID_ARGUMENT : NEAT_OK,
               sub, what);

        snprintf(what, sizeof what, "%s destroyed", a->name);
        snprintf(sub, sizeof sub, "%s: %s is not a live tensor", s->fn, a->name);
        neat_tensor *gone = make(dev, a->ndim, a->shape);
        neat_tensor_destroy(gone);
        t[i] = gone;
        expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_INVALID_HANDLE, sub, what);

        snprintf(what, sizeof what, "%s is a device handle", a->name);
        t[i] = (neat_tensor *)dev;
        expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_INVALID_HANDLE, sub, what);

        snprintf(what, sizeof what, "%s of another device", a->name);
        snprintf(sub, sizeof sub, "%s: %s belongs to another device", s->fn, a->name);
        t[i] = make(dev2, a->ndim, a->shape);
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
                t[i] = make(dev, a->ndim, shape);
                expect(&fx, t, &s->o, CB_FRESH, NEAT_ERR_SHAPE_MISMATCH, sub, what);
                neat_tensor_destroy(t[i]);
            }
            if (!(a->flags & NUMEL_ONLY)) {
                int64_t shape[4] = {1, 1, 1, 1};
                memcpy(shape, a->shape, sizeof(int64_t) * (size_t)a->ndim);
                int nd = a->ndim < 4 ? a->ndim + 1 : 3; /* a trailing 1 added, or one dropped */
                snprintf(what, sizeof what, "%s as %d-D", a->name, nd);
                t[i] = make(dev, nd, shape);
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

/* ---- aliasing, acceptance and exact messages, case by case --------------------------- */

static neat_tensor *ts(int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    const int64_t shape[4] = {d0, d1, d2, d3};
    return make_filled(ndim, shape, 1.0f);
}

static neat_tensor *view(neat_tensor *t, int ndim, int64_t d0, int64_t d1) {
    const int64_t shape[2] = {d0, d1};
    neat_tensor *v = NULL;
    neat_status st = neat_tensor_view(t, ndim, shape, &v);
    if (st != NEAT_OK) CHECK_OK(st, "neat_tensor_view (setup)");
    return v;
}

/* `call` records into `cb`; `out` is the output whose pattern a rejected call must keep. */
#define REJECT(out, want, sub, call)                                                        \
    do {                                                                                    \
        neat_tensor *o_[1] = {out};                                                         \
        neat_cmdbuf *cb = case_begin(o_, 1);                                                \
        case_end(cb, (call), want, sub, #call, o_, 1, (want) == NEAT_OK ? 2 : 1);           \
    } while (0)
#define ALIAS(out, sub, call) REJECT(out, NEAT_ERR_INVALID_ARGUMENT, sub, call)
#define ACCEPT(out, call) REJECT(out, NEAT_OK, "", call)

static void test_aliasing(void) {
    neat_tensor *a = ts(2, 3, 3, 0, 0), *b = ts(2, 3, 3, 0, 0), *c = ts(2, 3, 3, 0, 0);
    neat_tensor *d = ts(2, 3, 3, 0, 0), *av = view(a, 2, 3, 3);
    neat_tensor *a3 = ts(3, 2, 3, 3, 0), *b3 = ts(3, 2, 3, 3, 0);
    neat_tensor *v3 = ts(1, 3, 0, 0, 0), *v3b = ts(1, 3, 0, 0, 0), *row = ts(2, 1, 3, 0, 0);
    neat_tensor *bview = view(v3, 2, 1, 3);
    ALIAS(a, "neat_matmul: c shares memory with a", neat_matmul(cb, a, b, a, 1, 0, 0, 0));
    ALIAS(b, "neat_matmul: c shares memory with b", neat_matmul(cb, a, b, b, 1, 0, 0, 0));
    ALIAS(av, "neat_matmul: c shares memory with a", neat_matmul(cb, a, b, av, 1, 0, 0, 0));
    ALIAS(a3, "neat_matmul_batched: c shares memory with a",
          neat_matmul_batched(cb, a3, b3, a3, 1, 0, 0, 0));
    ALIAS(a, "neat_linear_forward: y shares memory with x",
          neat_linear_forward(cb, a, b, NULL, NEAT_ACT_RELU, a));
    ALIAS(b, "neat_linear_forward: y shares memory with w",
          neat_linear_forward(cb, a, b, v3b, NEAT_ACT_NONE, b));
    ALIAS(bview, "neat_linear_forward: y shares memory with b",
          neat_linear_forward(cb, row, a, v3, NEAT_ACT_NONE, bview));
    /* linear_backward: x, w, y, dy, dx, dw all 3x3 */
    ALIAS(a, "neat_linear_backward: dx shares memory with x",
          neat_linear_backward(cb, a, b, NULL, c, d, NEAT_ACT_RELU, a, NULL, NULL, 0));
    ALIAS(d, "neat_linear_backward: dx shares memory with dy",
          neat_linear_backward(cb, a, b, NULL, c, d, NEAT_ACT_RELU, d, NULL, NULL, 0));
    ALIAS(b, "neat_linear_backward: dw shares memory with w",
          neat_linear_backward(cb, a, b, NULL, c, d, NEAT_ACT_NONE, NULL, b, NULL, 0));
    ALIAS(c, "neat_linear_backward: dw shares memory with y",
          neat_linear_backward(cb, a, b, NULL, c, d, NEAT_ACT_TANH, NULL, c, NULL, 0));
    neat_tensor *g = ts(2, 3, 3, 0, 0);
    ALIAS(g, "neat_linear_backward: dw shares memory with dx",
          neat_linear_backward(cb, a, b, NULL, c, d, NEAT_ACT_NONE, g, g, NULL, 0));
    ALIAS(v3, "neat_linear_backward: db shares memory with b",
          neat_linear_backward(cb, a, b, v3, c, d, NEAT_ACT_GELU, NULL, NULL, v3, 1));
    ALIAS(d, "neat_activation_backward: dx shares memory with dy",
          neat_activation_backward(cb, NEAT_ACT_RELU, NULL, c, d, d));
    ALIAS(c, "neat_activation_backward: dx shares memory with y",
          neat_activation_backward(cb, NEAT_ACT_SIGMOID, NULL, c, d, c));
    ALIAS(a, "neat_activation_backward: dx shares memory with x",
          neat_activation_backward(cb, NEAT_ACT_GELU, a, NULL, d, a));
    ALIAS(c, "neat_softmax_backward: dx shares memory with y", neat_softmax_backward(cb, c, d, c));
    ALIAS(d, "neat_softmax_backward: dx shares memory with dy", neat_softmax_backward(cb, c, d, d));

    /* convolution and pooling keeping the size: 3x3 pad 1 / 1x1 windows */
    neat_tensor *x = ts(4, 1, 2, 4, 4), *w = ts(4, 2, 2, 3, 3), *y = ts(4, 1, 2, 4, 4);
    neat_tensor *dy = ts(4, 1, 2, 4, 4), *kb = ts(1, 2, 0, 0, 0);
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_pool2d_desc pd = {1, 1, 1, 1, 0, 0};
    ALIAS(x, "neat_conv2d_forward: y shares memory with x",
          neat_conv2d_forward(cb, &cd, x, w, NULL, NEAT_ACT_NONE, x));
    ALIAS(x, "neat_conv2d_backward: dx shares memory with x",
          neat_conv2d_backward(cb, &cd, x, w, NULL, y, dy, NEAT_ACT_RELU, x, NULL, NULL, 0));
    ALIAS(dy, "neat_conv2d_backward: dx shares memory with dy",
          neat_conv2d_backward(cb, &cd, x, w, NULL, y, dy, NEAT_ACT_RELU, dy, NULL, NULL, 0));
    ALIAS(w, "neat_conv2d_backward: dw shares memory with w",
          neat_conv2d_backward(cb, &cd, x, w, NULL, NULL, dy, NEAT_ACT_NONE, NULL, w, NULL, 0));
    ALIAS(kb, "neat_conv2d_backward: db shares memory with b",
          neat_conv2d_backward(cb, &cd, x, w, kb, NULL, dy, NEAT_ACT_NONE, NULL, NULL, kb, 0));
    ALIAS(x, "neat_maxpool2d: y shares memory with x", neat_maxpool2d(cb, &pd, x, x));
    ALIAS(x, "neat_maxpool2d_backward: dx shares memory with x",
          neat_maxpool2d_backward(cb, &pd, x, dy, x));
    ALIAS(dy, "neat_maxpool2d_backward: dx shares memory with dy",
          neat_maxpool2d_backward(cb, &pd, x, dy, dy));

    /* reductions and losses on one-element tensors */
    neat_tensor *one = ts(1, 1, 0, 0, 0), *lg = ts(2, 1, 1, 0, 0), *lgv = view(lg, 1, 1, 0);
    neat_tensor *lab = make_filled(1, (int64_t[]){1}, 0.0f);
    ALIAS(one, "neat_sum_all: y shares memory with x", neat_sum_all(cb, one, one));
    neat_tensor *row_flat = view(row, 1, 3, 0); /* [1,3] summed over axis 0 is [3] */
    ALIAS(row_flat, "neat_sum_axis: y shares memory with x", neat_sum_axis(cb, row, 0, row_flat));
    ALIAS(lab, "neat_softmax_cross_entropy: loss shares memory with labels",
          neat_softmax_cross_entropy(cb, lg, lab, lab));
    ALIAS(lgv, "neat_softmax_cross_entropy: loss shares memory with logits",
          neat_softmax_cross_entropy(cb, lg, lab, lgv));
    ALIAS(lg, "neat_softmax_cross_entropy_backward: dlogits shares memory with logits",
          neat_softmax_cross_entropy_backward(cb, lg, lab, lg));

    /* optimizers */
    neat_tensor *hyper = ts(1, 2, 0, 0, 0), *p2 = view(hyper, 1, 2, 0), *q2 = ts(1, 2, 0, 0, 0);
    neat_sgd_params sp = {0.9f, 0, 0};
    neat_adam_params ap = {0.9f, 0.999f, 1e-8f, 0};
    ALIAS(a, "neat_sgd_update: param shares memory with grad", neat_sgd_update(cb, &sp, hyper, a, a, b));
    neat_tensor *vel2 = ts(1, 2, 0, 0, 0);
    ALIAS(p2, "neat_sgd_update: param shares memory with hyper",
          neat_sgd_update(cb, &sp, hyper, p2, q2, vel2));
    ALIAS(a, "neat_sgd_update: velocity shares memory with param", neat_sgd_update(cb, &sp, hyper, a, b, a));
    ALIAS(b, "neat_sgd_update: velocity shares memory with grad", neat_sgd_update(cb, &sp, hyper, a, b, b));
    ALIAS(a, "neat_adam_update: param shares memory with m", neat_adam_update(cb, &ap, hyper, a, b, a, c));
    ALIAS(c, "neat_adam_update: m shares memory with v", neat_adam_update(cb, &ap, hyper, a, b, c, c));
    ALIAS(b, "neat_adam_update: v shares memory with grad", neat_adam_update(cb, &ap, hyper, a, b, c, b));

    /* the elementwise ops may run in place */
    ACCEPT(a, neat_add(cb, a, b, a));
    ACCEPT(b, neat_add(cb, a, b, b));
    ACCEPT(a, neat_scale(cb, a, 0.5f, a));
    ACCEPT(a, neat_activation_forward(cb, NEAT_ACT_SIGMOID, a, a));
    ACCEPT(a, neat_softmax(cb, a, a));
}

/* Shapes at the edges: zero sizes, broadcast forms, exact messages. */
static void test_shapes(void) {
    neat_tensor *a = ts(2, 2, 3, 0, 0), *b = ts(2, 3, 2, 0, 0), *c = ts(2, 2, 2, 0, 0);
    const char *exact = "neat_matmul: a is 2x5, b is 3x7: inner dimensions 5 and 3 differ";
    neat_tensor *a25 = ts(2, 2, 5, 0, 0), *b37 = ts(2, 3, 7, 0, 0), *c27 = ts(2, 2, 7, 0, 0);
    REJECT(c27, NEAT_ERR_SHAPE_MISMATCH, exact, neat_matmul(cb, a25, b37, c27, 1, 0, 0, 0));
    CHECK(strcmp(neat_last_error(), exact) == 0, "message \"%s\", want \"%s\"", neat_last_error(), exact);
    REJECT(c27, NEAT_ERR_SHAPE_MISMATCH, "a is 2x5 (transposed), b is 3x7: inner dimensions 2 and 3",
           neat_matmul(cb, a25, b37, c27, 1, 0, 1, 0));

    /* beta = 0: c is required but its NaN contents are not read */
    const float nan4[4] = {NAN, NAN, NAN, NAN};
    neat_tensor_write(c, nan4, 4);
    neat_cmdbuf *mb = NULL;
    neat_cmdbuf_create(dev, &mb);
    CHECK_OK(neat_matmul(mb, a, b, c, 1, 0, 0, 0), "matmul beta 0 over NaN c");
    CHECK_OK(neat_cmdbuf_commit(mb), "commit");
    CHECK_OK(neat_cmdbuf_wait(mb), "wait");
    float got[4] = {0};
    neat_tensor_read(c, got, 4);
    CHECK(got[0] == 3 && got[1] == 3 && got[2] == 3 && got[3] == 3,
          "matmul beta 0: c = %g %g %g %g, want 3 (ones 2x3 times ones 3x2)", got[0], got[1],
          got[2], got[3]);
    neat_cmdbuf_destroy(mb);

    /* zero sizes are valid */
    neat_tensor *z03 = ts(2, 0, 3, 0, 0), *z02 = ts(2, 0, 2, 0, 0), *a20 = ts(2, 2, 0, 0, 0);
    neat_tensor *b02 = ts(2, 0, 2, 0, 0), *z = ts(1, 0, 0, 0, 0), *s1 = ts(1, 1, 0, 0, 0);
    ACCEPT(z02, neat_matmul(cb, z03, b, z02, 1, 0, 0, 0));
    ACCEPT(c, neat_matmul(cb, a20, b02, c, 1, 0, 0, 0));
    ACCEPT(z03, neat_add(cb, z03, ts(1, 3, 0, 0, 0), z03));
    ACCEPT(s1, neat_sum_all(cb, z, s1));
    ACCEPT(z03, neat_softmax(cb, z03, z03));
    neat_conv2d_desc cd = neat_conv2d_desc_make(3, 3, 1, 1);
    neat_tensor *x0 = ts(4, 0, 2, 4, 4), *w = ts(4, 3, 2, 3, 3), *y0 = ts(4, 0, 3, 4, 4);
    ACCEPT(y0, neat_conv2d_forward(cb, &cd, x0, w, NULL, NEAT_ACT_RELU, y0));
    neat_pool2d_desc pd = {2, 2, 2, 2, 0, 0};
    neat_tensor *xc0 = ts(4, 2, 0, 4, 4), *yc0 = ts(4, 2, 0, 2, 2);
    ACCEPT(yc0, neat_maxpool2d(cb, &pd, xc0, yc0));
    neat_tensor *lab0 = ts(1, 0, 0, 0, 0), *l04 = ts(2, 0, 4, 0, 0);
    ACCEPT(s1, neat_softmax_cross_entropy(cb, l04, lab0, s1));
    neat_tensor *l20 = ts(2, 2, 0, 0, 0), *lab2 = ts(1, 2, 0, 0, 0);
    REJECT(s1, NEAT_ERR_SHAPE_MISMATCH, "neat_softmax_cross_entropy: logits is 2x0: no classes for 2 rows",
           neat_softmax_cross_entropy(cb, l20, lab2, s1));
    neat_tensor *h2 = ts(2, 2, 1, 0, 0), *zp = ts(1, 0, 0, 0, 0), *zg = ts(1, 0, 0, 0, 0);
    neat_sgd_params sp = {0, 0, 0};
    ACCEPT(zp, neat_sgd_update(cb, &sp, h2, zp, zg, NULL));

    /* the accepted shape variants */
    neat_tensor *v4 = ts(1, 4, 0, 0, 0), *r14 = ts(2, 1, 4, 0, 0), *o4 = ts(1, 4, 0, 0, 0);
    ACCEPT(o4, neat_add(cb, v4, r14, o4));
    neat_tensor *s0 = ts(0, 0, 0, 0, 0), *t0 = ts(0, 0, 0, 0, 0);
    ACCEPT(t0, neat_add(cb, s0, s0, t0));
    ACCEPT(t0, neat_sum_axis(cb, v4, 0, t0));
    ACCEPT(s1, neat_sum_axis(cb, v4, 0, s1));
    REJECT(t0, NEAT_ERR_INVALID_ARGUMENT, "neat_sum_axis: axis 0 is outside [0, 0) for x []",
           neat_sum_axis(cb, s0, 0, t0));
    neat_tensor *s111 = ts(3, 1, 1, 1, 0);
    ACCEPT(s111, neat_sum_all(cb, a, s111));
}

/* ---- the rest of the API ------------------------------------------------------------------ */

#define CHECK_FAILS(call, want, sub)                                                        \
    do {                                                                                    \
        neat_status st_ = (call);                                                           \
        CHECK_STATUS(st_, want, #call);                                                     \
        CHECK(strstr(neat_last_error(), sub) != NULL, "%s: message \"%s\" lacks \"%s\"",    \
              #call, neat_last_error(), sub);                                               \
    } while (0)

static void test_status_and_version(void) {
    static const struct { neat_status s; const char *name; } names[] = {
        {NEAT_OK, "NEAT_OK"}, {NEAT_ERR_INVALID_ARGUMENT, "NEAT_ERR_INVALID_ARGUMENT"},
        {NEAT_ERR_SHAPE_MISMATCH, "NEAT_ERR_SHAPE_MISMATCH"},
        {NEAT_ERR_DTYPE_MISMATCH, "NEAT_ERR_DTYPE_MISMATCH"},
        {NEAT_ERR_DEVICE_MISMATCH, "NEAT_ERR_DEVICE_MISMATCH"},
        {NEAT_ERR_UNSUPPORTED, "NEAT_ERR_UNSUPPORTED"},
        {NEAT_ERR_OUT_OF_MEMORY, "NEAT_ERR_OUT_OF_MEMORY"},
        {NEAT_ERR_INVALID_HANDLE, "NEAT_ERR_INVALID_HANDLE"},
        {NEAT_ERR_BACKEND_ERROR, "NEAT_ERR_BACKEND_ERROR"}, {NEAT_ERR_INTERNAL, "NEAT_ERR_INTERNAL"},
        {(neat_status)1, "unknown status"}, {(neat_status)-10, "unknown status"},
        {(neat_status)-1000, "unknown status"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *got = neat_status_string(names[i].s);
        CHECK(got && strcmp(got, names[i].name) == 0, "neat_status_string(%d) = %s, want %s",
              (int)names[i].s, got ? got : "(null)", names[i].name);
    }
    CHECK(neat_version_number() == NEAT_VERSION_NUMBER, "neat_version_number() = %d, header %d",
          neat_version_number(), NEAT_VERSION_NUMBER);
}

static void test_devices(void) {
    neat_device *d = NULL;
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, 0, NULL), NEAT_ERR_INVALID_ARGUMENT,
                "neat_device_create: out is NULL");
    CHECK_FAILS(neat_device_create((neat_backend)7, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "backend 7 is not a neat_backend");
    CHECK_FAILS(neat_device_create((neat_backend)-1, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "backend -1 is not a neat_backend");
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, -1, &d), NEAT_ERR_INVALID_ARGUMENT,
                "index -1 is negative");
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_CPU, 1, &d), NEAT_ERR_UNSUPPORTED, "index 0");
#ifndef __APPLE__
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_METAL, 0, &d), NEAT_ERR_UNSUPPORTED, "metal");
#endif
    CHECK(d == NULL, "a failed neat_device_create wrote its out-parameter");

    /* NEATML_BACKEND steers AUTO: a bad name is refused, "cpu" gives the CPU. */
    const char *saved = getenv("NEATML_BACKEND");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("NEATML_BACKEND", "bogus", 1);
    CHECK_FAILS(neat_device_create(NEAT_BACKEND_AUTO, 0, &d), NEAT_ERR_INVALID_ARGUMENT,
                "NEATML_BACKEND=\"bogus\"");
    setenv("NEATML_BACKEND", "cpu", 1);
    CHECK_OK(neat_device_create(NEAT_BACKEND_AUTO, 0, &d), "AUTO with NEATML_BACKEND=cpu");
    neat_device_props props;
    CHECK_OK(neat_device_info(d, &props), "neat_device_info");
    CHECK(props.backend == NEAT_BACKEND_CPU, "NEATML_BACKEND=cpu opened backend %d", (int)props.backend);
    if (keep) setenv("NEATML_BACKEND", keep, 1);
    else unsetenv("NEATML_BACKEND");
    free(keep);

    CHECK_FAILS(neat_device_info(d, NULL), NEAT_ERR_INVALID_ARGUMENT, "neat_device_info: out is NULL");
    CHECK_FAILS(neat_device_info(NULL, &props), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_device_set_math_mode(d, (neat_math_mode)5), NEAT_ERR_INVALID_ARGUMENT,
                "mode 5 is not a neat_math_mode");
    CHECK_FAILS(neat_device_memory_stats(d, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    neat_device_destroy(d);
    /* a destroyed device: every use is INVALID_HANDLE, destroying it again is ignored */
    neat_memory_stats ms;
    neat_tensor *t = NULL;
    neat_cmdbuf *cb = NULL;
    CHECK_FAILS(neat_device_info(d, &props), NEAT_ERR_INVALID_HANDLE, "dev is not a live device");
    CHECK_FAILS(neat_device_memory_stats(d, &ms), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_device_synchronize(d), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_device_trim(d), NEAT_ERR_INVALID_HANDLE, "not a live device");
    CHECK_FAILS(neat_matrix_create(d, 2, 2, &t), NEAT_ERR_INVALID_HANDLE, "dev is not a live device");
    CHECK_FAILS(neat_cmdbuf_create(d, &cb), NEAT_ERR_INVALID_HANDLE, "dev is not a live device");
    CHECK_FAILS(neat_device_info((neat_device *)sentinel, &props), NEAT_ERR_INVALID_HANDLE,
                "dev is not a live device");

    /* destroy functions ignore NULL and stale handles and leave the last error alone */
    neat_device_destroy(d);
    neat_device_destroy(NULL);
    neat_tensor_destroy(NULL);
    neat_cmdbuf_destroy(NULL);
    CHECK(strstr(neat_last_error(), "dev is not a live device") != NULL,
          "a destroy of NULL/stale handles changed the last error to \"%s\"", neat_last_error());
}

static void test_tensors(void) {
    neat_tensor *t = NULL;
    const int64_t neg[2] = {2, -3}, big[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    const int64_t bytes_over[1] = {(int64_t)1 << 62}, huge[1] = {(int64_t)1 << 43};
    const int64_t five[5] = {1, 1, 1, 1, 1}, two[2] = {2, 3};
    CHECK_FAILS(neat_tensor_create(NULL, 2, two, &t), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_tensor_create(dev, 2, two, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(neat_tensor_create(dev, 2, NULL, &t), NEAT_ERR_INVALID_ARGUMENT, "shape is NULL");
    CHECK_FAILS(neat_tensor_create(dev, 5, five, &t), NEAT_ERR_INVALID_ARGUMENT, "ndim 5 is outside 0..4");
    CHECK_FAILS(neat_tensor_create(dev, -1, two, &t), NEAT_ERR_INVALID_ARGUMENT, "ndim -1");
    CHECK_FAILS(neat_tensor_create(dev, 2, neg, &t), NEAT_ERR_INVALID_ARGUMENT, "shape[1] is -3, negative");
    CHECK_FAILS(neat_matrix_create(dev, -1, 4, &t), NEAT_ERR_INVALID_ARGUMENT, "shape[0] is -1");
    CHECK_FAILS(neat_tensor_create(dev, 2, big, &t), NEAT_ERR_INVALID_ARGUMENT, "overflows");
    CHECK_FAILS(neat_tensor_create(dev, 1, bytes_over, &t), NEAT_ERR_INVALID_ARGUMENT, "overflows");
    CHECK_FAILS(neat_tensor_create(dev, 1, huge, &t), NEAT_ERR_OUT_OF_MEMORY, "");
    CHECK(t == NULL, "a failed neat_tensor_create wrote its out-parameter");
    CHECK_OK(neat_tensor_create(dev, 0, NULL, &t), "a scalar with shape NULL");
    neat_tensor_destroy(t);

    neat_tensor *m = ts(2, 2, 3, 0, 0), *v = NULL;
    float buf[6] = {0};
    int nd;
    int64_t shape[4], n;
    const int64_t wrong[2] = {4, 2}, good[1] = {6};
    CHECK_FAILS(neat_tensor_write(m, buf, 5), NEAT_ERR_SHAPE_MISMATCH, "t is 2x3 (6 elements), count is 5");
    CHECK_FAILS(neat_tensor_read(m, buf, 7), NEAT_ERR_SHAPE_MISMATCH, "count is 7");
    CHECK_FAILS(neat_tensor_write(m, buf, -1), NEAT_ERR_INVALID_ARGUMENT, "count -1 is negative");
    CHECK_FAILS(neat_tensor_write(m, NULL, 6), NEAT_ERR_INVALID_ARGUMENT, "is NULL");
    CHECK_FAILS(neat_tensor_read(m, NULL, 6), NEAT_ERR_INVALID_ARGUMENT, "is NULL");
    CHECK_FAILS(neat_tensor_write(NULL, buf, 6), NEAT_ERR_INVALID_ARGUMENT, "t is NULL");
    CHECK_FAILS(neat_tensor_view(m, 2, wrong, &v), NEAT_ERR_SHAPE_MISMATCH, "t is 2x3 (6 elements), the new shape has 8");
    CHECK_FAILS(neat_tensor_view(m, 1, good, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(neat_tensor_shape(m, NULL, shape), NEAT_ERR_INVALID_ARGUMENT, "ndim is NULL");
    CHECK_FAILS(neat_tensor_shape(m, &nd, NULL), NEAT_ERR_INVALID_ARGUMENT, "shape is NULL");
    CHECK_FAILS(neat_tensor_numel(m, NULL), NEAT_ERR_INVALID_ARGUMENT, "numel is NULL");
    neat_tensor *z = ts(2, 0, 5, 0, 0);
    CHECK_OK(neat_tensor_write(z, NULL, 0), "writing 0 floats from NULL into a 0x5 tensor");
    CHECK_OK(neat_tensor_read(z, NULL, 0), "reading 0 floats into NULL from a 0x5 tensor");
    neat_tensor_destroy(m);
    CHECK_FAILS(neat_tensor_write(m, buf, 6), NEAT_ERR_INVALID_HANDLE, "t is not a live tensor");
    CHECK_FAILS(neat_tensor_read(m, buf, 6), NEAT_ERR_INVALID_HANDLE, "t is not a live tensor");
    CHECK_FAILS(neat_tensor_shape(m, &nd, shape), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_numel(m, &n), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_view(m, 1, good, &v), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    CHECK_FAILS(neat_tensor_numel((neat_tensor *)dev, &n), NEAT_ERR_INVALID_HANDLE, "not a live tensor");
    neat_tensor_destroy(m); /* again: ignored */
    neat_tensor_destroy(z);
}

static void test_cmdbufs(void) {
    neat_cmdbuf *cb = NULL;
    int64_t n;
    CHECK_FAILS(neat_cmdbuf_create(NULL, &cb), NEAT_ERR_INVALID_ARGUMENT, "dev is NULL");
    CHECK_FAILS(neat_cmdbuf_create(dev, NULL), NEAT_ERR_INVALID_ARGUMENT, "out is NULL");
    CHECK_FAILS(neat_cmdbuf_commit(NULL), NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_commit: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_wait(NULL), NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_wait: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_reset(NULL), NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_reset: cb is NULL");
    CHECK_OK(neat_cmdbuf_create(dev, &cb), "neat_cmdbuf_create");
    CHECK_FAILS(neat_cmdbuf_op_count(cb, NULL), NEAT_ERR_INVALID_ARGUMENT, "count is NULL");
    CHECK_OK(neat_cmdbuf_wait(cb), "wait on a buffer never committed");
    double secs = -1;
    CHECK_FAILS(neat_cmdbuf_device_time(NULL, &secs), NEAT_ERR_INVALID_ARGUMENT,
                "neat_cmdbuf_device_time: cb is NULL");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, NULL), NEAT_ERR_INVALID_ARGUMENT, "seconds is NULL");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, &secs), NEAT_ERR_INVALID_ARGUMENT, "has completed yet");
    CHECK(secs == -1, "a refused device_time wrote seconds = %g", secs);

    /* A tensor destroyed after recording: commit refuses, nothing runs. */
    neat_tensor *t = ts(1, 4, 0, 0, 0), *keep = ts(1, 4, 0, 0, 0);
    CHECK_OK(neat_fill(cb, keep, 7.0f), "fill keep");
    CHECK_OK(neat_fill(cb, t, 5.0f), "fill t");
    neat_tensor_destroy(t);
    CHECK_FAILS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "destroyed after recording");
    CHECK_OK(neat_cmdbuf_wait(cb), "wait after a refused commit");
    float got[4];
    neat_tensor_read(keep, got, 4);
    CHECK(got[0] == 1 && got[3] == 1, "a refused commit ran ops (keep = %g)", got[0]);
    CHECK_OK(neat_cmdbuf_reset(cb), "reset");
    CHECK_OK(neat_cmdbuf_op_count(cb, &n), "op_count");
    CHECK(n == 0, "reset left %lld ops", (long long)n);

    /* Asynchronous failure: a label out of range is reported by wait, not by commit. */
    neat_tensor *logits = ts(2, 2, 3, 0, 0), *labels = ts(1, 2, 0, 0, 0), *loss = ts(1, 1, 0, 0, 0);
    const float bad_labels[2][2] = {{0, 3}, {-1, 1}};
    for (int i = 0; i < 2; i++) {
        neat_tensor_write(labels, bad_labels[i], 2);
        neat_cmdbuf_reset(cb);
        CHECK_OK(neat_softmax_cross_entropy(cb, logits, labels, loss), "record cross-entropy");
        CHECK_OK(neat_cmdbuf_commit(cb), "commit cross-entropy");
        neat_status st = neat_cmdbuf_wait(cb);
        CHECK_STATUS(st, NEAT_ERR_INVALID_ARGUMENT, "wait reports an out-of-range label");
        CHECK(strlen(neat_last_error()) > 0, "the async failure has no message");
    }

    neat_cmdbuf_destroy(cb);
    CHECK_FAILS(neat_cmdbuf_commit(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_wait(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_reset(cb), NEAT_ERR_INVALID_HANDLE, "cb is not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_op_count(cb, &n), NEAT_ERR_INVALID_HANDLE, "not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_device_time(cb, &secs), NEAT_ERR_INVALID_HANDLE, "not a live command buffer");
    CHECK_FAILS(neat_cmdbuf_commit((neat_cmdbuf *)keep), NEAT_ERR_INVALID_HANDLE, "not a live command buffer");
    neat_cmdbuf_destroy(cb); /* again: ignored */
    neat_tensor_destroy(keep);
    neat_tensor_destroy(logits);
    neat_tensor_destroy(labels);
    neat_tensor_destroy(loss);
}

int main(void) {
    CHECK(strcmp(neat_last_error(), "") == 0, "neat_last_error() before any failure is \"%s\"",
          neat_last_error());
    test_status_and_version();
    if (neat_device_create(NEAT_BACKEND_CPU, 0, &dev) != NEAT_OK ||
        neat_device_create(NEAT_BACKEND_CPU, 0, &dev2) != NEAT_OK) {
        CHECK(0, "cannot open two CPU devices: %s", neat_last_error());
        return nt_finish("errors");
    }
    sentinel = make(dev, 1, (int64_t[]){4});
    test_devices();
    test_tensors();
    test_cmdbufs();
    for (int r = 0; r < NOPTION_CASES; r++) { /* a row naming no spec would never run */
        int found = 0;
        for (int i = 0; i < NSPECS; i++) found |= strcmp(SPECS[i].label, OPTION_CASES[r].spec) == 0;
        CHECK(found, "option row %d names no spec \"%s\"", r, OPTION_CASES[r].spec);
    }
    for (int i = 0; i < NSPECS; i++) run_spec(&SPECS[i]);
    test_aliasing();
    test_shapes();
    neat_tensor_destroy(sentinel);
    neat_device_destroy(dev2);
    neat_device_destroy(dev);
    printf("errors: %d op calls checked (%d op descriptions, %d option rows)\n", ncases, NSPECS,
           NOPTION_CASES);
    return nt_finish("errors");
}
