/*
 * neatml_objects.c — the C side of Neatml.Gpu's objects: version, backend names, devices,
 * tensors and command buffers (the blocks that hold them: neatml_blocks.c).
 *
 * The runtime lock is released around every call that may wait or take long (device
 * creation, tensor and buffer creation, commit, wait, reset, synchronize, trim, device
 * destroy, the free of a buffer that writes host memory, Tensor.read/write), after
 * draining this device's entries of the deferred-free list. A stub that releases the lock
 * roots the blocks it uses (CAMLparam): the block then stays reachable, so its finalizer
 * cannot destroy the handle while the call uses it, and a young block is found again after
 * a minor collection moved it. Bigarray data never moves.
 */
#include "neatml_stubs.h"

#include <caml/alloc.h>
#include <caml/bigarray.h>
#include <caml/memory.h>
#include <caml/threads.h>

#include <stdio.h>
#include <stdlib.h>

/* ---- version and backends ----------------------------------------------------------------- */

value neatml_version_number(value unit) {
    (void)unit;
    return Val_int(neat_version_number());
}

value neatml_header_version_number(value unit) {
    (void)unit;
    return Val_int(NEAT_VERSION_NUMBER);
}

/* Gpu.Backend.t lists the backends in the order of their enum values (Auto = 0); gpu.ml
 * checks at load time that the library has as many as the variant (neatml_backend_count). */
value neatml_backend_count(value unit) {
    (void)unit;
    int n = 0;
    while (neat_backend_name((neat_backend)n) != NULL) n++;
    return Val_int(n);
}

value neatml_backend_name(value backend) {
    const char *name = neat_backend_name((neat_backend)Int_val(backend));
    return caml_copy_string(name != NULL ? name : "");
}

value neatml_backend_from_name(value name) {
    if (!caml_string_is_c_safe(name))
        neatml_raise_msg(NEAT_ERR_INVALID_ARGUMENT,
                         "neat_backend_from_name: the name holds a NUL byte");
    neat_backend b = NEAT_BACKEND_AUTO;
    neatml_check(neat_backend_from_name(String_val(name), &b));
    return Val_int(b);
}

value neatml_backend_is_built(value backend) {
    return Val_bool(neat_backend_is_built((neat_backend)Int_val(backend)));
}

/* ---- devices ------------------------------------------------------------------------------ */

/* A quarter of the device's memory: garbage tensors waiting for the next major cycle then
 * stay well under what the device has, next to the live ones. */
static int64_t default_gc_budget(neat_device *dev) {
    neat_device_props p;
    if (neat_device_info(dev, &p) == NEAT_OK && p.total_memory > 0) return p.total_memory / 4;
    return (int64_t)1 << 30;
}

value neatml_device_create(value backend_v, value index_v, value budget_v) {
    neat_backend backend = (neat_backend)Int_val(backend_v);
    int index = neatml_int_arg(index_v, "neat_device_create", "index");
    int64_t budget = Long_val(budget_v); /* <= 0: the default */
    neatml_drain(NULL, 0);
    neat_device *dev = NULL;
    caml_release_runtime_system();
    neat_status s = neat_device_create(backend, index, &dev);
    if (s == NEAT_OK && budget <= 0) budget = default_gc_budget(dev);
    caml_acquire_runtime_system();
    neatml_check(s);
    value v = neatml_alloc_block(KIND_DEVICE, dev, dev, 1, NEATML_HEAVY_PER_CYCLE);
    Block_val(v)->gc_budget = budget;
    return v;
}

value neatml_device_destroy(value v) {
    neatml_block *b = Block_val(v);
    neat_device *dev = b->handle;
    b->handle = NULL; /* before releasing the lock: another thread sees it freed */
    if (dev == NULL) return Val_unit;
    neatml_drain(dev, 0); /* v is not used after this */
    caml_release_runtime_system();
    neatml_destroy_device(dev);
    caml_acquire_runtime_system();
    return Val_unit;
}

value neatml_device_gc_budget(value v) { return Val_long(Block_val(v)->gc_budget); }

value neatml_device_info(value v) {
    CAMLparam1(v);
    CAMLlocal3(r, name, selection);
    neat_device_props p;
    neatml_check(neat_device_info(DEV(v), &p));
    name = caml_copy_string(p.name);
    selection = caml_copy_string(p.selection);
    r = caml_alloc_tuple(7);
    Store_field(r, 0, Val_int(p.backend));
    Store_field(r, 1, Val_int(p.index));
    Store_field(r, 2, name);
    Store_field(r, 3, Val_long(p.total_memory));
    Store_field(r, 4, Val_int(p.num_threads));
    Store_field(r, 5, Val_int(p.math_mode));
    Store_field(r, 6, selection);
    CAMLreturn(r);
}

value neatml_device_set_math_mode(value v, value mode) {
    neatml_check(neat_device_set_math_mode(DEV(v), (neat_math_mode)Int_val(mode)));
    return Val_unit;
}

value neatml_device_memory_stats(value v) {
    neat_memory_stats m;
    neatml_check(neat_device_memory_stats(DEV(v), &m));
    value r = caml_alloc_tuple(4); /* immediates only: no roots needed */
    Field(r, 0) = Val_long(m.in_use);
    Field(r, 1) = Val_long(m.reserved);
    Field(r, 2) = Val_long(m.peak);
    Field(r, 3) = Val_long(m.limit);
    return r;
}

value neatml_device_set_memory_limit(value v, value bytes) {
    neatml_check(neat_device_set_memory_limit(DEV(v), (int64_t)Long_val(bytes)));
    return Val_unit;
}

value neatml_device_reset_peak(value v) {
    neatml_check(neat_device_reset_peak(DEV(v)));
    return Val_unit;
}

/* The deferred entries of this device now (Tensor.create's retry when out of memory: the
 * roots of the buffers the GC finalized go, so that the next collection finds what they
 * kept). */
value neatml_device_drain(value v) {
    CAMLparam1(v);
    neatml_drain(DEV(v), 0);
    CAMLreturn(Val_unit);
}

/* synchronize and trim wait for the device: the deferred entries of it go first. */
static value device_call(value v, neat_status (*call)(neat_device *)) {
    CAMLparam1(v);
    neat_device *dev = DEV(v);
    neatml_drain(dev, 0);
    caml_release_runtime_system();
    neat_status s = call(dev);
    caml_acquire_runtime_system();
    neatml_check(s);
    CAMLreturn(Val_unit);
}

value neatml_device_synchronize(value v) { return device_call(v, neat_device_synchronize); }
value neatml_device_trim(value v) { return device_call(v, neat_device_trim); }

/* ---- tensors ------------------------------------------------------------------------------ */

/* An OCaml int array of at most 4 sizes into C: more is Invalid_argument here (the C call
 * reads only ndim sizes: it must never be given a short array). */
static int shape_of_array(value arr, int64_t shape[NEAT_MAX_DIMS], const char *fn) {
    mlsize_t n = Wosize_val(arr);
    if (n > NEAT_MAX_DIMS) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s: %lu dimensions, more than 4 dimensions", fn,
                 (unsigned long)n);
        neatml_raise_msg(NEAT_ERR_INVALID_ARGUMENT, msg);
    }
    for (mlsize_t i = 0; i < n; i++) shape[i] = Long_val(Field(arr, i));
    return (int)n;
}

/* dtype: the index of the OCaml constructor (F32 | Bf16 | F16), neat_dtype's values. */
static value tensor_create(value dev_v, value shape_arr, int dtype, int zeros) {
    CAMLparam1(dev_v);
    const char *fn = dtype != NEAT_F32 ? "neat_tensor_create_typed"
                     : zeros           ? "neat_tensor_create_zeros"
                                       : "neat_tensor_create";
    int64_t shape[NEAT_MAX_DIMS] = {0};
    int ndim = shape_of_array(shape_arr, shape, fn);
    neat_device *dev = DEV(dev_v);
    int64_t budget = Block_val(dev_v)->gc_budget;
    neatml_drain(dev, 0);
    neat_tensor *t = NULL;
    caml_release_runtime_system(); /* zeros waits for its fill; create may allocate long */
    neat_status s = neat_tensor_create_typed(dev, (neat_dtype)dtype, ndim, shape, zeros, &t);
    caml_acquire_runtime_system();
    neatml_check(s);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    int64_t bytes = numel * (int64_t)neat_dtype_size((neat_dtype)dtype);
    CAMLreturn(neatml_alloc_block(KIND_TENSOR, t, dev, bytes, budget));
}

value neatml_tensor_create(value dev, value shape) {
    return tensor_create(dev, shape, NEAT_F32, 0);
}
value neatml_tensor_create_zeros(value dev, value shape) {
    return tensor_create(dev, shape, NEAT_F32, 1);
}
value neatml_tensor_create_typed(value dev, value dtype, value shape, value zeros) {
    return tensor_create(dev, shape, Int_val(dtype), Bool_val(zeros));
}

value neatml_tensor_dtype(value v) {
    neat_dtype dt = NEAT_F32;
    neatml_check(neat_tensor_dtype(TEN(v), &dt));
    return Val_int((int)dt);
}

value neatml_tensor_view(value tv, value shape_arr) {
    int64_t shape[NEAT_MAX_DIMS] = {0};
    int ndim = shape_of_array(shape_arr, shape, "neat_tensor_view");
    neat_tensor *t = NULL;
    neatml_check(neat_tensor_view(TEN(tv), ndim, shape, &t));
    /* A view shares its parent's memory: it costs the GC nothing more. */
    return neatml_alloc_block(KIND_TENSOR, t, Block_val(tv)->device, 0, 1);
}

/* Never waits: work already committed keeps the memory until it completes. */
value neatml_tensor_destroy(value v) {
    neatml_block *b = Block_val(v);
    neat_tensor *t = b->handle;
    b->handle = NULL;
    neat_tensor_destroy(t);
    return Val_unit;
}

value neatml_tensor_shape(value v) {
    int ndim = 0;
    int64_t shape[NEAT_MAX_DIMS];
    neatml_check(neat_tensor_shape(TEN(v), &ndim, shape));
    value r = ndim == 0 ? Atom(0) : caml_alloc_tuple(ndim);
    for (int i = 0; i < ndim; i++) Field(r, i) = Val_long(shape[i]);
    return r;
}

int64_t neatml_bigarray_count(value ba) {
    struct caml_ba_array *b = Caml_ba_array_val(ba);
    int64_t n = 1;
    for (int i = 0; i < b->num_dims; i++) n *= b->dim[i];
    return n;
}

/* The four host copies: float32 values converted to and from the tensor's type (count
 * elements), or the tensor's own bytes (raw: a half tensor's 16-bit patterns from any
 * Bigarray of as many bytes). Each waits for the committed work that uses the tensor. */
enum { COPY_WRITE, COPY_READ, COPY_WRITE_RAW, COPY_READ_RAW };

static value tensor_copy(value tv, value ba, int kind) {
    CAMLparam2(tv, ba);
    neat_tensor *t = TEN(tv);
    void *data = Caml_ba_data_val(ba);
    int64_t count = neatml_bigarray_count(ba);
    size_t bytes = caml_ba_byte_size(Caml_ba_array_val(ba));
    neatml_drain(Block_val(tv)->device, 0);
    caml_release_runtime_system();
    neat_status s = kind == COPY_WRITE       ? neat_tensor_write(t, data, count)
                    : kind == COPY_READ      ? neat_tensor_read(t, data, count)
                    : kind == COPY_WRITE_RAW ? neat_tensor_write_raw(t, data, bytes)
                                             : neat_tensor_read_raw(t, data, bytes);
    caml_acquire_runtime_system();
    neatml_check(s);
    CAMLreturn(Val_unit);
}

value neatml_tensor_write(value tv, value ba) { return tensor_copy(tv, ba, COPY_WRITE); }
value neatml_tensor_read(value tv, value ba) { return tensor_copy(tv, ba, COPY_READ); }
value neatml_tensor_write_raw(value tv, value ba) { return tensor_copy(tv, ba, COPY_WRITE_RAW); }
value neatml_tensor_read_raw(value tv, value ba) { return tensor_copy(tv, ba, COPY_READ_RAW); }

/* ---- command buffers ---------------------------------------------------------------------- */

value neatml_cmdbuf_create(value dev_v) {
    CAMLparam1(dev_v);
    CAMLlocal1(v);
    neat_device *dev = DEV(dev_v);
    neatml_drain(dev, 0);
    neat_cmdbuf *cb = NULL;
    caml_release_runtime_system();
    neat_status s = neat_cmdbuf_create(dev, &cb);
    caml_acquire_runtime_system();
    neatml_check(s);
    value *recorded = malloc(sizeof *recorded);
    if (recorded == NULL) {
        neat_cmdbuf_destroy(cb);
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_cmdbuf_create: out of host memory");
    }
    *recorded = Val_emptylist;
    caml_register_generational_global_root(recorded);
    v = neatml_alloc_block(KIND_CMDBUF, cb, dev, 0, 1);
    Block_val(v)->recorded = recorded;
    CAMLreturn(v);
}

/* What the buffer keeps alive (a Gpu.Cmdbuf.kept list), and its replacement. */
value neatml_cmdbuf_recorded(value v) { return *Block_val(v)->recorded; }

value neatml_cmdbuf_set_recorded(value v, value list) {
    caml_modify_generational_global_root(Block_val(v)->recorded, list);
    return Val_unit;
}

/* Never waits, unless the buffer's work may still write host memory: the Bigarrays it
 * keeps alive may go once the root forgets them, so that work must be over first. */
value neatml_cmdbuf_destroy(value v) {
    CAMLparam1(v);
    neat_cmdbuf *cb = Block_val(v)->handle;
    Block_val(v)->handle = NULL;
    if (cb != NULL && Block_val(v)->host_writes) {
        caml_release_runtime_system();
        (void)neat_cmdbuf_wait(cb); /* its failure is the caller's to hear before free */
        neat_cmdbuf_destroy(cb);
        caml_acquire_runtime_system();
    } else {
        neat_cmdbuf_destroy(cb);
    }
    Block_val(v)->host_writes = 0;
    caml_modify_generational_global_root(Block_val(v)->recorded, Val_emptylist);
    CAMLreturn(Val_unit);
}

value neatml_cmdbuf_commit(value v) {
    CAMLparam1(v); /* the root keeps the copies' Bigarrays, read during commit */
    neat_cmdbuf *cb = CB(v);
    caml_release_runtime_system(); /* a first CUDA replay captures a graph */
    neat_status s = neat_cmdbuf_commit(cb);
    caml_acquire_runtime_system();
    neatml_check(s);
    CAMLreturn(Val_unit);
}

/* wait and reset block on the buffer's work: the device's deferred entries go first. */
value neatml_cmdbuf_wait(value v) {
    CAMLparam1(v);
    neat_cmdbuf *cb = CB(v);
    neatml_drain(Block_val(v)->device, 0);
    caml_release_runtime_system();
    neat_status s = neat_cmdbuf_wait(cb);
    caml_acquire_runtime_system();
    neatml_check(s);
    CAMLreturn(Val_unit);
}

/* The library drops the ops even when it reports a failure of their last run: so do we. */
value neatml_cmdbuf_reset(value v) {
    CAMLparam1(v);
    neat_cmdbuf *cb = CB(v);
    neatml_drain(Block_val(v)->device, 0);
    caml_release_runtime_system();
    neat_status s = neat_cmdbuf_reset(cb);
    caml_acquire_runtime_system();
    if (s != NEAT_ERR_INVALID_HANDLE) {
        Block_val(v)->host_writes = 0;
        caml_modify_generational_global_root(Block_val(v)->recorded, Val_emptylist);
    }
    neatml_check(s);
    CAMLreturn(Val_unit);
}

value neatml_cmdbuf_op_count(value v) {
    int64_t n = 0;
    neatml_check(neat_cmdbuf_op_count(CB(v), &n));
    return Val_long(n);
}

value neatml_cmdbuf_device_time(value v) {
    double s = 0;
    neatml_check(neat_cmdbuf_device_time(CB(v), &s));
    return caml_copy_double(s);
}
