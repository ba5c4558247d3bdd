/*
 * neatml_ops.c — the C side of Neatml.Gpu's operations: the recorded host copies, the
 * convolution and pooling descriptors, and one stub per neatml op. Every op only records
 * into its command buffer (nothing waits), so the runtime lock is kept. Functions of more
 * than five arguments have a bytecode entry taking (argv, argc).
 */
#include "neatml_stubs.h"

#include <caml/alloc.h>
#include <caml/bigarray.h>
#include <caml/memory.h>

#include <limits.h>
#include <stdlib.h>

/* ---- host copies -------------------------------------------------------------------------
 * The Bigarray's data never moves; gpu.ml keeps the Bigarray alive from the buffer's root.
 * A copy to host memory marks the buffer: its free and its finalizer must then let its
 * work finish before the root lets the Bigarray go. */

value neatml_copy_from_host(value cb, value ba, value t) {
    neatml_check(neat_copy_from_host(CB(cb), (const float *)Caml_ba_data_val(ba),
                                     neatml_bigarray_count(ba), TEN(t)));
    return Val_unit;
}

value neatml_copy_to_host(value cb, value t, value ba) {
    neatml_check(neat_copy_to_host(CB(cb), TEN(t), (float *)Caml_ba_data_val(ba),
                                   neatml_bigarray_count(ba)));
    Block_val(cb)->host_writes = 1;
    return Val_unit;
}

/* ---- operations ------------------------------------------------------------------------ */

value neatml_matmul(value cb, value a, value b, value c, value alpha, value beta, value ta,
                    value tb) {
    neatml_check(neat_matmul(CB(cb), TEN(a), TEN(b), TEN(c), (float)Double_val(alpha),
                             (float)Double_val(beta), Bool_val(ta), Bool_val(tb)));
    return Val_unit;
}

value neatml_matmul_bc(value *argv, int argc) {
    (void)argc;
    return neatml_matmul(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6], argv[7]);
}

value neatml_matmul_batched(value cb, value a, value b, value c, value alpha, value beta, value ta,
                            value tb) {
    neatml_check(neat_matmul_batched(CB(cb), TEN(a), TEN(b), TEN(c), (float)Double_val(alpha),
                                     (float)Double_val(beta), Bool_val(ta), Bool_val(tb)));
    return Val_unit;
}

value neatml_matmul_batched_bc(value *argv, int argc) {
    (void)argc;
    return neatml_matmul_batched(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                 argv[7]);
}

value neatml_add(value cb, value a, value b, value out) {
    neatml_check(neat_add(CB(cb), TEN(a), TEN(b), TEN(out)));
    return Val_unit;
}

value neatml_mul(value cb, value a, value b, value out) {
    neatml_check(neat_mul(CB(cb), TEN(a), TEN(b), TEN(out)));
    return Val_unit;
}

value neatml_cast(value cb, value x, value y) {
    neatml_check(neat_cast(CB(cb), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_scale(value cb, value x, value alpha, value out) {
    neatml_check(neat_scale(CB(cb), TEN(x), (float)Double_val(alpha), TEN(out)));
    return Val_unit;
}

value neatml_fill(value cb, value t, value v) {
    neatml_check(neat_fill(CB(cb), TEN(t), (float)Double_val(v)));
    return Val_unit;
}

value neatml_linear_forward(value cb, value x, value w, value b, value act, value y) {
    neatml_check(neat_linear_forward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(w),
                                     OPT_TEN(b), TEN(y)));
    return Val_unit;
}

value neatml_linear_forward_bc(value *argv, int argc) {
    (void)argc;
    return neatml_linear_forward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5]);
}

/* Gpu.layout: a constant constructor whose index is the neat_layout (NCHW 0, NHWC 1). */
static neat_layout layout_of(value v) {
    return Int_val(v) == 1 ? NEAT_LAYOUT_NHWC : NEAT_LAYOUT_NCHW;
}

/* Gpu.Conv2d.t: a record of nine ints then a Gpu.layout, in the order of neat_conv2d_desc's
 * fields. */
static neat_conv2d_desc conv_desc_of(value d) {
    neat_conv2d_desc c;
    c.kernel_h = Long_val(Field(d, 0));
    c.kernel_w = Long_val(Field(d, 1));
    c.stride_h = Long_val(Field(d, 2));
    c.stride_w = Long_val(Field(d, 3));
    c.pad_h = Long_val(Field(d, 4));
    c.pad_w = Long_val(Field(d, 5));
    c.dilation_h = Long_val(Field(d, 6));
    c.dilation_w = Long_val(Field(d, 7));
    c.groups = Long_val(Field(d, 8));
    c.layout = layout_of(Field(d, 9));
    return c;
}

/* Gpu.Pool2d.t: a record of six ints then a Gpu.layout, in the order of neat_pool2d_desc's
 * fields. */
static neat_pool2d_desc pool_desc_of(value d) {
    neat_pool2d_desc p;
    p.kernel_h = Long_val(Field(d, 0));
    p.kernel_w = Long_val(Field(d, 1));
    p.stride_h = Long_val(Field(d, 2));
    p.stride_w = Long_val(Field(d, 3));
    p.pad_h = Long_val(Field(d, 4));
    p.pad_w = Long_val(Field(d, 5));
    p.layout = layout_of(Field(d, 6));
    return p;
}

/* Conv2d.make and Pool2d.make build their records through the library's makers, so that the
 * field order and the defaults of the C API are read in one place; the makers give NCHW, and
 * the layout asked for is set after, as in C. */
value neatml_conv2d_desc_full(value kh, value kw, value sh, value sw, value ph, value pw, value dh,
                              value dw, value groups, value layout) {
    neat_conv2d_desc c =
        neat_conv2d_desc_full(Long_val(kh), Long_val(kw), Long_val(sh), Long_val(sw), Long_val(ph),
                              Long_val(pw), Long_val(dh), Long_val(dw), Long_val(groups));
    c.layout = layout_of(layout);
    int64_t fields[9] = {c.kernel_h, c.kernel_w,   c.stride_h,   c.stride_w, c.pad_h,
                         c.pad_w,    c.dilation_h, c.dilation_w, c.groups};
    value r = caml_alloc_tuple(10); /* immediates only: no roots needed */
    for (int i = 0; i < 9; i++) Field(r, i) = Val_long(fields[i]);
    Field(r, 9) = Val_int(c.layout);
    return r;
}

value neatml_conv2d_desc_full_bc(value *argv, int argc) {
    (void)argc;
    return neatml_conv2d_desc_full(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                   argv[7], argv[8], argv[9]);
}

value neatml_pool2d_desc_full(value kh, value kw, value sh, value sw, value ph, value pw,
                              value layout) {
    neat_pool2d_desc p = neat_pool2d_desc_full(Long_val(kh), Long_val(kw), Long_val(sh),
                                               Long_val(sw), Long_val(ph), Long_val(pw));
    p.layout = layout_of(layout);
    int64_t fields[6] = {p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w};
    value r = caml_alloc_tuple(7);
    for (int i = 0; i < 6; i++) Field(r, i) = Val_long(fields[i]);
    Field(r, 6) = Val_int(p.layout);
    return r;
}

value neatml_pool2d_desc_full_bc(value *argv, int argc) {
    (void)argc;
    return neatml_pool2d_desc_full(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6]);
}

value neatml_conv2d_forward(value cb, value desc, value x, value w, value b, value act, value y) {
    neat_conv2d_desc d = conv_desc_of(desc);
    neatml_check(neat_conv2d_forward(CB(cb), &d, (neat_activation)Int_val(act), TEN(x), TEN(w),
                                     OPT_TEN(b), TEN(y)));
    return Val_unit;
}

value neatml_conv2d_forward_bc(value *argv, int argc) {
    (void)argc;
    return neatml_conv2d_forward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6]);
}

value neatml_maxpool2d(value cb, value desc, value x, value y) {
    neat_pool2d_desc d = pool_desc_of(desc);
    neatml_check(neat_maxpool2d(CB(cb), &d, TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_sum_all(value cb, value x, value y) {
    neatml_check(neat_sum_all(CB(cb), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_sum_axis(value cb, value x, value axis, value y) {
    int a = neatml_int_arg(axis, "neat_sum_axis", "axis");
    neatml_check(neat_sum_axis(CB(cb), TEN(x), a, TEN(y)));
    return Val_unit;
}

value neatml_softmax(value cb, value x, value y) {
    neatml_check(neat_softmax(CB(cb), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_activation_forward(value cb, value act, value x, value y) {
    neatml_check(neat_activation_forward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_activation_backward(value cb, value act, value x, value y, value dy, value dx) {
    neatml_check(neat_activation_backward(CB(cb), (neat_activation)Int_val(act), OPT_TEN(x),
                                          OPT_TEN(y), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_activation_backward_bc(value *argv, int argc) {
    (void)argc;
    return neatml_activation_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5]);
}

value neatml_linear_backward(value cb, value x, value w, value b, value y, value dy, value act,
                             value dx, value dw, value db, value accumulate) {
    neatml_check(neat_linear_backward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(w),
                                      OPT_TEN(b), OPT_TEN(y), TEN(dy), OPT_TEN(dx), OPT_TEN(dw),
                                      OPT_TEN(db), Bool_val(accumulate)));
    return Val_unit;
}

value neatml_linear_backward_bc(value *argv, int argc) {
    (void)argc;
    return neatml_linear_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                  argv[7], argv[8], argv[9], argv[10]);
}

value neatml_conv2d_backward(value cb, value desc, value x, value w, value b, value y, value dy,
                             value act, value dx, value dw, value db, value accumulate) {
    neat_conv2d_desc d = conv_desc_of(desc);
    neatml_check(neat_conv2d_backward(CB(cb), &d, (neat_activation)Int_val(act), TEN(x), TEN(w),
                                      OPT_TEN(b), OPT_TEN(y), TEN(dy), OPT_TEN(dx), OPT_TEN(dw),
                                      OPT_TEN(db), Bool_val(accumulate)));
    return Val_unit;
}

value neatml_conv2d_backward_bc(value *argv, int argc) {
    (void)argc;
    return neatml_conv2d_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                  argv[7], argv[8], argv[9], argv[10], argv[11]);
}

value neatml_maxpool2d_backward(value cb, value desc, value x, value dy, value dx) {
    neat_pool2d_desc d = pool_desc_of(desc);
    neatml_check(neat_maxpool2d_backward(CB(cb), &d, TEN(x), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_softmax_backward(value cb, value y, value dy, value dx) {
    neatml_check(neat_softmax_backward(CB(cb), TEN(y), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_softmax_cross_entropy(value cb, value logits, value labels, value loss) {
    neatml_check(neat_softmax_cross_entropy(CB(cb), TEN(logits), TEN(labels), TEN(loss)));
    return Val_unit;
}

value neatml_softmax_cross_entropy_backward(value cb, value logits, value labels, value dlogits) {
    neatml_check(
        neat_softmax_cross_entropy_backward(CB(cb), TEN(logits), TEN(labels), TEN(dlogits)));
    return Val_unit;
}

value neatml_sgd_update(value cb, value momentum, value weight_decay, value nesterov, value hyper,
                        value param, value grad, value velocity) {
    neat_sgd_params p = {(float)Double_val(momentum), (float)Double_val(weight_decay),
                         Bool_val(nesterov)};
    neatml_check(neat_sgd_update(CB(cb), &p, TEN(hyper), TEN(param), TEN(grad), OPT_TEN(velocity)));
    return Val_unit;
}

value neatml_sgd_update_bc(value *argv, int argc) {
    (void)argc;
    return neatml_sgd_update(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                             argv[7]);
}

value neatml_adam_update(value cb, value beta1, value beta2, value eps, value weight_decay,
                         value hyper, value param, value grad, value m, value v) {
    neat_adam_params p = {(float)Double_val(beta1), (float)Double_val(beta2),
                          (float)Double_val(eps), (float)Double_val(weight_decay)};
    neatml_check(neat_adam_update(CB(cb), &p, TEN(hyper), TEN(param), TEN(grad), TEN(m), TEN(v)));
    return Val_unit;
}

value neatml_adam_update_bc(value *argv, int argc) {
    (void)argc;
    return neatml_adam_update(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                              argv[7], argv[8], argv[9]);
}

/* ---- mixed precision ---------------------------------------------------------------------
 * The mixed optimizers take the NULL-able scaler, velocity and param as options; the
 * loss-scale ops read and write the scaler only when they run. All only record. */

value neatml_sgd_update_mixed(value cb, value momentum, value weight_decay, value nesterov,
                              value hyper, value scaler, value master, value grad, value velocity,
                              value param) {
    neat_sgd_params p = {(float)Double_val(momentum), (float)Double_val(weight_decay),
                         Bool_val(nesterov)};
    neatml_check(neat_sgd_update_mixed(CB(cb), &p, TEN(hyper), OPT_TEN(scaler), TEN(master),
                                       TEN(grad), OPT_TEN(velocity), OPT_TEN(param)));
    return Val_unit;
}

value neatml_sgd_update_mixed_bc(value *argv, int argc) {
    (void)argc;
    return neatml_sgd_update_mixed(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                   argv[7], argv[8], argv[9]);
}

value neatml_adam_update_mixed(value cb, value beta1, value beta2, value eps, value weight_decay,
                               value hyper, value scaler, value master, value grad, value m,
                               value v, value param) {
    neat_adam_params p = {(float)Double_val(beta1), (float)Double_val(beta2),
                          (float)Double_val(eps), (float)Double_val(weight_decay)};
    neatml_check(neat_adam_update_mixed(CB(cb), &p, TEN(hyper), OPT_TEN(scaler), TEN(master),
                                        TEN(grad), TEN(m), TEN(v), OPT_TEN(param)));
    return Val_unit;
}

value neatml_adam_update_mixed_bc(value *argv, int argc) {
    (void)argc;
    return neatml_adam_update_mixed(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                    argv[7], argv[8], argv[9], argv[10], argv[11]);
}

value neatml_loss_scale(value cb, value scaler, value x, value y) {
    neatml_check(neat_loss_scale(CB(cb), TEN(scaler), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_loss_scale_check(value cb_v, value tensors, value scaler_v) {
    neat_cmdbuf *cb = CB(cb_v); /* these raise before anything is allocated */
    neat_tensor *scaler = TEN(scaler_v);
    mlsize_t n = Wosize_val(tensors);
    for (mlsize_t i = 0; i < n; i++) (void)TEN(Field(tensors, i));
    neat_tensor **ts = calloc(n ? n : 1, sizeof *ts);
    if (ts == NULL)
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_loss_scale_check: out of host memory");
    for (mlsize_t i = 0; i < n; i++) ts[i] = Block_val(Field(tensors, i))->handle;
    /* a list past NEAT_LOSS_SCALE_CHECK_MAX is the library's INVALID_ARGUMENT */
    int count = n > INT_MAX ? INT_MAX : (int)n;
    neat_status s = neat_loss_scale_check(cb, (const neat_tensor *const *)ts, count, scaler);
    free(ts);
    neatml_check(s);
    return Val_unit;
}

value neatml_loss_scale_update(value cb, value growth, value backoff, value interval,
                               value scaler) {
    /* an OCaml int past C's int would wrap into a valid-looking interval */
    int iv = neatml_int_arg(interval, "neat_loss_scale_update", "growth_interval");
    neat_loss_scale_params p = {(float)Double_val(growth), (float)Double_val(backoff), iv};
    neatml_check(neat_loss_scale_update(CB(cb), &p, TEN(scaler)));
    return Val_unit;
}
