/*
 * neatml_comm.c — the C side of Neatml.Gpu.Comm and the collectives: comm ids (an OCaml
 * string of the 128 bytes of neat_comm_id), comms, and the recording of all_reduce,
 * all_reduce_bucket and broadcast.
 *
 * Creating a comm waits for its peers and destroying one waits for its device's work: both
 * release the runtime lock (the id is copied to the C stack first: an OCaml string may
 * move). Comms are listed with their device (neatml_blocks.c), so that a device freed
 * first destroys them before it goes. The collectives only record: the lock is kept.
 */
#include "neatml_stubs.h"

#include <caml/alloc.h>
#include <caml/memory.h>
#include <caml/threads.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ids ------------------------------------------------------------------------------- */

#define ID_BYTES sizeof(((neat_comm_id *)0)->bytes)

static value id_to_value(const neat_comm_id *id) {
    return caml_alloc_initialized_string(ID_BYTES, (const char *)id->bytes);
}

/* Gpu.Comm.Id.t is a string of exactly ID_BYTES bytes (gpu.ml makes no other). */
static neat_comm_id id_of_value(value v) {
    neat_comm_id id;
    memcpy(id.bytes, String_val(v), ID_BYTES);
    return id;
}

value neatml_comm_id_create(value backend) {
    neat_comm_id id;
    neatml_check(neat_comm_id_create((neat_backend)Int_val(backend), &id));
    return id_to_value(&id);
}

value neatml_comm_id_to_string(value v) {
    neat_comm_id id = id_of_value(v);
    char text[2 * ID_BYTES + 1];
    neatml_check(neat_comm_id_to_string(&id, text, sizeof text));
    return caml_copy_string(text);
}

value neatml_comm_id_of_string(value text) {
    if (!caml_string_is_c_safe(text))
        neatml_raise_msg(NEAT_ERR_INVALID_ARGUMENT,
                         "neat_comm_id_from_string: not an id: the text holds a NUL byte");
    neat_comm_id id;
    neatml_check(neat_comm_id_from_string(String_val(text), &id));
    return id_to_value(&id);
}

/* ---- comms ----------------------------------------------------------------------------- */

/* The block of a comm just made on dev, listed with its device. */
static value comm_block(neat_comm *comm, neat_device *dev) {
    if (!neatml_comm_opened(comm, dev)) {
        caml_release_runtime_system();
        neat_comm_destroy(comm);
        caml_acquire_runtime_system();
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_comm_create: out of host memory");
    }
    return neatml_alloc_block(KIND_COMM, comm, dev, 1, NEATML_HEAVY_PER_CYCLE);
}

value neatml_comm_create(value dev_v, value id_v, value nranks, value rank) {
    CAMLparam2(dev_v, id_v);
    int n = neatml_int_arg(nranks, "neat_comm_create", "nranks");
    int r = neatml_int_arg(rank, "neat_comm_create", "rank");
    neat_device *dev = DEV(dev_v);
    neatml_drain(dev, 0);
    neat_comm_id id = id_of_value(id_v);
    neat_comm *comm = NULL;
    caml_release_runtime_system(); /* returns once every rank has joined */
    neat_status s = neat_comm_create(dev, &id, n, r, &comm);
    caml_acquire_runtime_system();
    neatml_check(s);
    CAMLreturn(comm_block(comm, dev));
}

value neatml_comm_create_all(value devs_v) {
    CAMLparam1(devs_v);
    CAMLlocal2(r, block);
    mlsize_t n = Wosize_val(devs_v);
    for (mlsize_t i = 0; i < n; i++) neatml_drain(DEV(Field(devs_v, i)), 0);
    /* At least one slot: the library reports ndev = 0 itself, given non-NULL arrays. */
    neat_device **devs = calloc(n ? n : 1, sizeof *devs);
    neat_comm **comms = calloc(n ? n : 1, sizeof *comms);
    if (devs == NULL || comms == NULL) {
        free(devs), free(comms);
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_comm_create_all: out of host memory");
    }
    for (mlsize_t i = 0; i < n; i++) {
        devs[i] = Block_val(Field(devs_v, i))->handle;
        if (devs[i] == NULL) {
            free(devs), free(comms);
            char msg[128];
            snprintf(msg, sizeof msg, "neat_comm_create_all: device %lu used after free",
                     (unsigned long)i);
            neatml_raise_msg(NEAT_ERR_INVALID_HANDLE, msg);
        }
    }
    caml_release_runtime_system();
    neat_status s = neat_comm_create_all((int)n, devs, comms);
    caml_acquire_runtime_system();
    if (s != NEAT_OK) {
        free(devs), free(comms);
        neatml_check(s);
    }
    /* List every comm first: nothing below may then leave one unlisted. */
    mlsize_t listed = 0;
    while (listed < n && neatml_comm_opened(comms[listed], devs[listed])) listed++;
    if (listed < n) {
        caml_release_runtime_system();
        for (mlsize_t i = 0; i < n; i++) {
            if (i < listed)
                neatml_destroy_comm(comms[i]);
            else
                neat_comm_destroy(comms[i]);
        }
        caml_acquire_runtime_system();
        free(devs), free(comms);
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_comm_create_all: out of host memory");
    }
    r = caml_alloc(n, 0);
    for (mlsize_t i = 0; i < n; i++) {
        block = neatml_alloc_block(KIND_COMM, comms[i], devs[i], 1, NEATML_HEAVY_PER_CYCLE);
        Store_field(r, i, block);
    }
    free(devs), free(comms);
    CAMLreturn(r);
}

/* Waits for the device's work (neat_comm_destroy synchronizes it): the lock is released. */
value neatml_comm_destroy(value v) {
    neatml_block *b = Block_val(v);
    neat_comm *comm = b->handle;
    b->handle = NULL; /* before releasing the lock: another thread sees it freed */
    if (comm == NULL) return Val_unit;
    neatml_drain(b->device, 0); /* v is not used after this */
    caml_release_runtime_system();
    neatml_destroy_comm(comm);
    caml_acquire_runtime_system();
    return Val_unit;
}

value neatml_comm_set_timeout(value v, value seconds) {
    neatml_check(neat_comm_set_timeout(COMM(v), Double_val(seconds)));
    return Val_unit;
}

value neatml_comm_info(value v) {
    int rank = 0, nranks = 0;
    neatml_check(neat_comm_info(COMM(v), &rank, &nranks));
    value r = caml_alloc_tuple(2); /* immediates only: no roots needed */
    Field(r, 0) = Val_int(rank);
    Field(r, 1) = Val_int(nranks);
    return r;
}

/* ---- collectives: Gpu.reduce_op lists Sum, Avg in neat_reduce_op's order -------------- */

value neatml_all_reduce(value cb, value comm, value op, value x, value y) {
    neatml_check(neat_all_reduce(CB(cb), COMM(comm), (neat_reduce_op)Int_val(op), TEN(x), TEN(y)));
    return Val_unit;
}

/* tensors: a Tensor.handle array (gpu.ml builds it from the list). */
value neatml_all_reduce_bucket(value cb_v, value comm_v, value op, value tensors) {
    neat_cmdbuf *cb = CB(cb_v); /* these raise before anything is allocated */
    neat_comm *comm = COMM(comm_v);
    mlsize_t n = Wosize_val(tensors);
    for (mlsize_t i = 0; i < n; i++) (void)TEN(Field(tensors, i));
    neat_tensor **ts = calloc(n ? n : 1, sizeof *ts);
    if (ts == NULL)
        neatml_raise_msg(NEAT_ERR_OUT_OF_MEMORY, "neat_all_reduce_bucket: out of host memory");
    for (mlsize_t i = 0; i < n; i++) ts[i] = Block_val(Field(tensors, i))->handle;
    neat_status s = neat_all_reduce_bucket(cb, comm, (neat_reduce_op)Int_val(op), (int)n, ts);
    free(ts);
    neatml_check(s);
    return Val_unit;
}

value neatml_broadcast(value cb, value comm, value root, value x, value y) {
    int r = neatml_int_arg(root, "neat_broadcast", "root");
    neatml_check(neat_broadcast(CB(cb), COMM(comm), r, TEN(x), TEN(y)));
    return Val_unit;
}
