/*
 * neatml_stubs.c — the C side of Neatml.Gpu: one stub per neatml call.
 *
 * Handles live in custom blocks holding the library's handle (one pointer). A tensor's block
 * is allocated with caml_alloc_custom_mem counting the tensor's bytes, so that device memory
 * drives the major GC as host memory would. Finalizers only release (neat_*_destroy).
 * An explicit free destroys the handle and stores NULL, so a second free is a no-op and a
 * use after free is answered Error (Invalid_handle, ...) here, before the library is called.
 *
 * Order of destruction: the OCaml records wrapping tensor and command-buffer blocks hold
 * their device (gpu.ml), so a device is never collected while one of them is reachable.
 * When a device and its tensors die in the same cycle, finalizers run in any order; that is
 * safe because the library's handles are generation-checked: neat_device_destroy releases
 * the tensors left, and the later neat_tensor_destroy of a stale handle is ignored.
 *
 * Errors: a failing call raises the exception registered by gpu.ml as "neatml.error" with
 * the status and neat_last_error()'s message, copied to the C stack first (allocating the
 * OCaml string may run finalizers, which call the library). Nothing is held when we raise.
 *
 * The runtime lock is released around every call that may block on device work (wait,
 * synchronize, reset, destroy, and host copies, which wait for committed work first).
 */
#define CAML_NAME_SPACE
#include <caml/alloc.h>
#include <caml/bigarray.h>
#include <caml/callback.h>
#include <caml/custom.h>
#include <caml/fail.h>
#include <caml/memory.h>
#include <caml/mlvalues.h>
#include <caml/threads.h>

#include <stdio.h>
#include <string.h>

#include "neatml.h"

/* ---- errors ----------------------------------------------------------------------------- */

/* The OCaml variant Gpu.status lists the errors in the order of their codes:
 * Invalid_argument (-1) is constructor 0, ..., Internal (-9) is constructor 8. */
static value status_to_variant(neat_status s)
{
    if (s <= NEAT_ERR_INVALID_ARGUMENT && s >= NEAT_ERR_INTERNAL)
        return Val_int(-(int)s - 1);
    return Val_int(-(int)NEAT_ERR_INTERNAL - 1);
}

static void raise_error_msg(neat_status s, const char *text)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", text && *text ? text : neat_status_string(s));
    const value *exn = caml_named_value("neatml.error");
    if (exn == NULL) /* gpu.ml registers it at initialisation: cannot happen once linked */
        caml_failwith(msg);
    value args[2];
    args[0] = status_to_variant(s);
    args[1] = caml_copy_string(msg); /* args[0] is immediate: no root needed across this */
    caml_raise_with_args(*exn, 2, args);
}

static void raise_error(neat_status s) { raise_error_msg(s, neat_last_error()); }

static inline void check(neat_status s)
{
    if (s != NEAT_OK)
        raise_error(s);
}

/* ---- custom blocks ------------------------------------------------------------------------ */

#define Handle_val(v) (*(void **)Data_custom_val(v))

static void finalize_device(value v)
{
    neat_device_destroy(Handle_val(v));
    Handle_val(v) = NULL;
}

static void finalize_tensor(value v)
{
    neat_tensor_destroy(Handle_val(v));
    Handle_val(v) = NULL;
}

static void finalize_cmdbuf(value v)
{
    neat_cmdbuf_destroy(Handle_val(v));
    Handle_val(v) = NULL;
}

/* Identity comparison and hashing: two blocks are equal when they hold the same handle. */
static int compare_handle(value a, value b)
{
    uintptr_t x = (uintptr_t)Handle_val(a), y = (uintptr_t)Handle_val(b);
    return x < y ? -1 : x > y;
}

static intnat hash_handle(value v) { return (intnat)((uintptr_t)Handle_val(v) >> 4); }

#define HANDLE_OPS(name, finalizer)                                                          \
    static struct custom_operations name = {                                                 \
        "neatml." #name,   finalizer,           compare_handle,          hash_handle,        \
        custom_serialize_default, custom_deserialize_default, custom_compare_ext_default,    \
        custom_fixed_length_default}

HANDLE_OPS(device_ops, finalize_device);
HANDLE_OPS(tensor_ops, finalize_tensor);
HANDLE_OPS(cmdbuf_ops, finalize_cmdbuf);

static value alloc_handle(struct custom_operations *ops, void *h, mlsize_t mem)
{
    value v = caml_alloc_custom_mem(ops, sizeof(void *), mem);
    Handle_val(v) = h;
    return v;
}

/* The live handle in block v, or Error (Invalid_handle, ...) when v was freed. */
static void *live(value v, const char *what)
{
    void *h = Handle_val(v);
    if (h == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "Neatml.Gpu: %s used after free", what);
        raise_error_msg(NEAT_ERR_INVALID_HANDLE, msg);
    }
    return h;
}

#define DEV(v) ((neat_device *)live((v), "device"))
#define TEN(v) ((neat_tensor *)live((v), "tensor"))
#define CB(v) ((neat_cmdbuf *)live((v), "command buffer"))
/* An OCaml `handle option`: None is NULL (the C API's "absent"). */
#define OPT_TEN(v) (Is_block(v) ? TEN(Field((v), 0)) : NULL)

/* ---- version ------------------------------------------------------------------------------- */

value neatml_version_number(value unit)
{
    (void)unit;
    return Val_int(neat_version_number());
}

value neatml_header_version_number(value unit)
{
    (void)unit;
    return Val_int(NEAT_VERSION_NUMBER);
}

/* ---- device --------------------------------------------------------------------------------- */

value neatml_device_create(value backend, value index)
{
    neat_device *dev = NULL;
    check(neat_device_create((neat_backend)Int_val(backend), Int_val(index), &dev));
    return alloc_handle(&device_ops, dev, 0);
}

value neatml_device_destroy(value v)
{
    CAMLparam1(v);
    neat_device *dev = Handle_val(v);
    Handle_val(v) = NULL; /* before releasing the lock: another thread sees it freed */
    caml_release_runtime_system();
    neat_device_destroy(dev);
    caml_acquire_runtime_system();
    CAMLreturn(Val_unit);
}

value neatml_device_info(value v)
{
    CAMLparam1(v);
    CAMLlocal2(r, name);
    neat_device_props p;
    check(neat_device_info(DEV(v), &p));
    name = caml_copy_string(p.name);
    r = caml_alloc_tuple(6);
    Store_field(r, 0, Val_int(p.backend));
    Store_field(r, 1, Val_int(p.index));
    Store_field(r, 2, name);
    Store_field(r, 3, Val_long(p.total_memory));
    Store_field(r, 4, Val_int(p.num_threads));
    Store_field(r, 5, Val_int(p.math_mode));
    CAMLreturn(r);
}

value neatml_device_set_math_mode(value v, value mode)
{
    check(neat_device_set_math_mode(DEV(v), (neat_math_mode)Int_val(mode)));
    return Val_unit;
}

value neatml_device_synchronize(value v)
{
    CAMLparam1(v);
    neat_device *dev = DEV(v);
    caml_release_runtime_system();
    neat_status s = neat_device_synchronize(dev);
    caml_acquire_runtime_system();
    check(s);
    CAMLreturn(Val_unit);
}

value neatml_device_memory_stats(value v)
{
    neat_memory_stats m;
    check(neat_device_memory_stats(DEV(v), &m));
    value r = caml_alloc_tuple(3); /* immediates only: no roots needed */
    Field(r, 0) = Val_long(m.in_use);
    Field(r, 1) = Val_long(m.reserved);
    Field(r, 2) = Val_long(m.peak);
    return r;
}

value neatml_device_reset_peak(value v)
{
    check(neat_device_reset_peak(DEV(v)));
    return Val_unit;
}

value neatml_device_trim(value v)
{
    check(neat_device_trim(DEV(v)));
    return Val_unit;
}

/* ---- tensors ---------------------------------------------------------------------------------- */

/* An OCaml int array of at most 4 sizes into C; anything else is left to the library to
 * reject (ndim out of range is INVALID_ARGUMENT there, with its message). */
static int shape_of_array(value arr, int64_t shape[NEAT_MAX_DIMS])
{
    mlsize_t n = Wosize_val(arr);
    for (mlsize_t i = 0; i < n && i < NEAT_MAX_DIMS; i++)
        shape[i] = Long_val(Field(arr, i));
    return n > 64 ? 64 : (int)n; /* > 4 is rejected by the library; keep it an int */
}

value neatml_tensor_create(value dev, value shape_arr)
{
    int64_t shape[NEAT_MAX_DIMS] = {0};
    int ndim = shape_of_array(shape_arr, shape);
    if (ndim > NEAT_MAX_DIMS) /* the C call reads only ndim sizes: never pass it a short array */
        raise_error_msg(NEAT_ERR_INVALID_ARGUMENT,
                        "neat_tensor_create: more than 4 dimensions");
    neat_tensor *t = NULL;
    check(neat_tensor_create(DEV(dev), ndim, shape, &t));
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    return alloc_handle(&tensor_ops, t, (mlsize_t)numel * sizeof(float));
}

value neatml_tensor_view(value tv, value shape_arr)
{
    int64_t shape[NEAT_MAX_DIMS] = {0};
    int ndim = shape_of_array(shape_arr, shape);
    if (ndim > NEAT_MAX_DIMS)
        raise_error_msg(NEAT_ERR_INVALID_ARGUMENT, "neat_tensor_view: more than 4 dimensions");
    neat_tensor *t = NULL;
    check(neat_tensor_view(TEN(tv), ndim, shape, &t));
    /* A view shares its parent's memory: it costs the GC nothing more. */
    return alloc_handle(&tensor_ops, t, 0);
}

value neatml_tensor_destroy(value v)
{
    CAMLparam1(v);
    neat_tensor *t = Handle_val(v);
    Handle_val(v) = NULL;
    if (t != NULL) {
        caml_release_runtime_system(); /* destroy waits for the device's committed work */
        neat_tensor_destroy(t);
        caml_acquire_runtime_system();
    }
    CAMLreturn(Val_unit);
}

value neatml_tensor_shape(value v)
{
    int ndim = 0;
    int64_t shape[NEAT_MAX_DIMS];
    check(neat_tensor_shape(TEN(v), &ndim, shape));
    value r = ndim == 0 ? Atom(0) : caml_alloc_tuple(ndim);
    for (int i = 0; i < ndim; i++)
        Field(r, i) = Val_long(shape[i]);
    return r;
}

static int64_t bigarray_count(value ba)
{
    struct caml_ba_array *b = Caml_ba_array_val(ba);
    int64_t n = 1;
    for (int i = 0; i < b->num_dims; i++)
        n *= b->dim[i];
    return n;
}

/* The Bigarray's data does not move and CAMLparam keeps the Bigarray alive, so the copy can
 * run without the runtime lock (it waits for the device's committed work first). */
value neatml_tensor_write(value tv, value ba)
{
    CAMLparam2(tv, ba);
    neat_tensor *t = TEN(tv);
    const float *src = (const float *)Caml_ba_data_val(ba);
    int64_t count = bigarray_count(ba);
    caml_release_runtime_system();
    neat_status s = neat_tensor_write(t, src, count);
    caml_acquire_runtime_system();
    check(s);
    CAMLreturn(Val_unit);
}

value neatml_tensor_read(value tv, value ba)
{
    CAMLparam2(tv, ba);
    neat_tensor *t = TEN(tv);
    float *dst = (float *)Caml_ba_data_val(ba);
    int64_t count = bigarray_count(ba);
    caml_release_runtime_system();
    neat_status s = neat_tensor_read(t, dst, count);
    caml_acquire_runtime_system();
    check(s);
    CAMLreturn(Val_unit);
}

/* ---- command buffers ------------------------------------------------------------------------ */

value neatml_cmdbuf_create(value dev)
{
    neat_cmdbuf *cb = NULL;
    check(neat_cmdbuf_create(DEV(dev), &cb));
    return alloc_handle(&cmdbuf_ops, cb, 0);
}

value neatml_cmdbuf_destroy(value v)
{
    CAMLparam1(v);
    neat_cmdbuf *cb = Handle_val(v);
    Handle_val(v) = NULL;
    if (cb != NULL) {
        caml_release_runtime_system(); /* destroy waits for the buffer's submitted work */
        neat_cmdbuf_destroy(cb);
        caml_acquire_runtime_system();
    }
    CAMLreturn(Val_unit);
}

value neatml_cmdbuf_commit(value v)
{
    check(neat_cmdbuf_commit(CB(v)));
    return Val_unit;
}

/* wait and reset block on device work: release the lock (v stays rooted by CAMLparam). */
value neatml_cmdbuf_wait(value v)
{
    CAMLparam1(v);
    neat_cmdbuf *cb = CB(v);
    caml_release_runtime_system();
    neat_status s = neat_cmdbuf_wait(cb);
    caml_acquire_runtime_system();
    check(s);
    CAMLreturn(Val_unit);
}

value neatml_cmdbuf_reset(value v)
{
    CAMLparam1(v);
    neat_cmdbuf *cb = CB(v);
    caml_release_runtime_system();
    neat_status s = neat_cmdbuf_reset(cb);
    caml_acquire_runtime_system();
    check(s);
    CAMLreturn(Val_unit);
}

value neatml_cmdbuf_op_count(value v)
{
    int64_t n = 0;
    check(neat_cmdbuf_op_count(CB(v), &n));
    return Val_long(n);
}

value neatml_cmdbuf_device_time(value v)
{
    CAMLparam1(v);
    double s = 0;
    check(neat_cmdbuf_device_time(CB(v), &s));
    CAMLreturn(caml_copy_double(s));
}

/* ---- operations ------------------------------------------------------------------------------
 * Every op only records (no blocking), so the runtime lock is kept. Functions of more than
 * five arguments have a bytecode entry taking (argv, argc). */

value neatml_matmul(value cb, value a, value b, value c, value alpha, value beta, value ta,
                    value tb)
{
    check(neat_matmul(CB(cb), TEN(a), TEN(b), TEN(c), (float)Double_val(alpha),
                      (float)Double_val(beta), Bool_val(ta), Bool_val(tb)));
    return Val_unit;
}

value neatml_matmul_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_matmul(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                         argv[7]);
}

value neatml_matmul_batched(value cb, value a, value b, value c, value alpha, value beta,
                            value ta, value tb)
{
    check(neat_matmul_batched(CB(cb), TEN(a), TEN(b), TEN(c), (float)Double_val(alpha),
                              (float)Double_val(beta), Bool_val(ta), Bool_val(tb)));
    return Val_unit;
}

value neatml_matmul_batched_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_matmul_batched(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                                 argv[7]);
}

value neatml_add(value cb, value a, value b, value out)
{
    check(neat_add(CB(cb), TEN(a), TEN(b), TEN(out)));
    return Val_unit;
}

value neatml_scale(value cb, value x, value alpha, value out)
{
    check(neat_scale(CB(cb), TEN(x), (float)Double_val(alpha), TEN(out)));
    return Val_unit;
}

value neatml_fill(value cb, value t, value v)
{
    check(neat_fill(CB(cb), TEN(t), (float)Double_val(v)));
    return Val_unit;
}

value neatml_linear_forward(value cb, value x, value w, value b, value act, value y)
{
    check(neat_linear_forward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(w), OPT_TEN(b), TEN(y)));
    return Val_unit;
}

value neatml_linear_forward_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_linear_forward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5]);
}

/* Gpu.Conv2d.t: a record of nine ints in the order of neat_conv2d_desc's fields. */
static neat_conv2d_desc conv_desc_of(value d)
{
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
    return c;
}

/* Gpu.Pool2d.t: a record of six ints in the order of neat_pool2d_desc's fields. */
static neat_pool2d_desc pool_desc_of(value d)
{
    neat_pool2d_desc p;
    p.kernel_h = Long_val(Field(d, 0));
    p.kernel_w = Long_val(Field(d, 1));
    p.stride_h = Long_val(Field(d, 2));
    p.stride_w = Long_val(Field(d, 3));
    p.pad_h = Long_val(Field(d, 4));
    p.pad_w = Long_val(Field(d, 5));
    return p;
}

value neatml_conv2d_forward(value cb, value desc, value x, value w, value b, value act,
                            value y)
{
    neat_conv2d_desc d = conv_desc_of(desc);
    check(neat_conv2d_forward(CB(cb), &d, (neat_activation)Int_val(act), TEN(x), TEN(w), OPT_TEN(b), TEN(y)));
    return Val_unit;
}

value neatml_conv2d_forward_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_conv2d_forward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                 argv[6]);
}

value neatml_maxpool2d(value cb, value desc, value x, value y)
{
    neat_pool2d_desc d = pool_desc_of(desc);
    check(neat_maxpool2d(CB(cb), &d, TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_sum_all(value cb, value x, value y)
{
    check(neat_sum_all(CB(cb), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_sum_axis(value cb, value x, value axis, value y)
{
    check(neat_sum_axis(CB(cb), TEN(x), Int_val(axis), TEN(y)));
    return Val_unit;
}

value neatml_softmax(value cb, value x, value y)
{
    check(neat_softmax(CB(cb), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_activation_forward(value cb, value act, value x, value y)
{
    check(neat_activation_forward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(y)));
    return Val_unit;
}

value neatml_activation_backward(value cb, value act, value x, value y, value dy, value dx)
{
    check(neat_activation_backward(CB(cb), (neat_activation)Int_val(act), OPT_TEN(x),
                                   OPT_TEN(y), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_activation_backward_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_activation_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5]);
}

value neatml_linear_backward(value cb, value x, value w, value b, value y, value dy,
                             value act, value dx, value dw, value db, value accumulate)
{
    check(neat_linear_backward(CB(cb), (neat_activation)Int_val(act), TEN(x), TEN(w), OPT_TEN(b), OPT_TEN(y), TEN(dy), OPT_TEN(dx), OPT_TEN(dw),
                               OPT_TEN(db), Bool_val(accumulate)));
    return Val_unit;
}

value neatml_linear_backward_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_linear_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                  argv[6], argv[7], argv[8], argv[9], argv[10]);
}

value neatml_conv2d_backward(value cb, value desc, value x, value w, value b, value y,
                             value dy, value act, value dx, value dw, value db,
                             value accumulate)
{
    neat_conv2d_desc d = conv_desc_of(desc);
    check(neat_conv2d_backward(CB(cb), &d, (neat_activation)Int_val(act), TEN(x), TEN(w), OPT_TEN(b), OPT_TEN(y), TEN(dy), OPT_TEN(dx), OPT_TEN(dw),
                               OPT_TEN(db), Bool_val(accumulate)));
    return Val_unit;
}

value neatml_conv2d_backward_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_conv2d_backward(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5],
                                  argv[6], argv[7], argv[8], argv[9], argv[10], argv[11]);
}

value neatml_maxpool2d_backward(value cb, value desc, value x, value dy, value dx)
{
    neat_pool2d_desc d = pool_desc_of(desc);
    check(neat_maxpool2d_backward(CB(cb), &d, TEN(x), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_softmax_backward(value cb, value y, value dy, value dx)
{
    check(neat_softmax_backward(CB(cb), TEN(y), TEN(dy), TEN(dx)));
    return Val_unit;
}

value neatml_softmax_cross_entropy(value cb, value logits, value labels, value loss)
{
    check(neat_softmax_cross_entropy(CB(cb), TEN(logits), TEN(labels), TEN(loss)));
    return Val_unit;
}

value neatml_softmax_cross_entropy_backward(value cb, value logits, value labels,
                                            value dlogits)
{
    check(neat_softmax_cross_entropy_backward(CB(cb), TEN(logits), TEN(labels), TEN(dlogits)));
    return Val_unit;
}

value neatml_sgd_update(value cb, value momentum, value weight_decay, value nesterov,
                        value hyper, value param, value grad, value velocity)
{
    neat_sgd_params p = {(float)Double_val(momentum), (float)Double_val(weight_decay),
                         Bool_val(nesterov)};
    check(neat_sgd_update(CB(cb), &p, TEN(hyper), TEN(param), TEN(grad), OPT_TEN(velocity)));
    return Val_unit;
}

value neatml_sgd_update_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_sgd_update(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                             argv[7]);
}

value neatml_adam_update(value cb, value beta1, value beta2, value eps, value weight_decay,
                         value hyper, value param, value grad, value m, value v)
{
    neat_adam_params p = {(float)Double_val(beta1), (float)Double_val(beta2),
                          (float)Double_val(eps), (float)Double_val(weight_decay)};
    check(neat_adam_update(CB(cb), &p, TEN(hyper), TEN(param), TEN(grad), TEN(m), TEN(v)));
    return Val_unit;
}

value neatml_adam_update_bc(value *argv, int argc)
{
    (void)argc;
    return neatml_adam_update(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], argv[6],
                              argv[7], argv[8], argv[9]);
}
