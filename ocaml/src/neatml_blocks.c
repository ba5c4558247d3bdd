/*
 * neatml_blocks.c — the custom blocks that hold the library's handles for Neatml.Gpu, their
 * finalizers and the deferred-free list for what those cannot release, and raising
 * Gpu.Error.
 *
 * Finalizers never wait for the device. A finalizer runs inside the GC, on whatever thread
 * allocated, holding the runtime lock. neat_tensor_destroy and neat_cmdbuf_destroy never
 * wait (a submission holds what it uses; the memory returns when the work completes) and
 * take the library's locks only briefly, so the finalizers of tensors and command buffers
 * call them. Three things still go through a mutex-protected list (malloc, no OCaml
 * allocation, no runtime call), emptied by neatml_drain with the runtime lock released at
 * the start of the calls that may wait for the device anyway (creation, wait, reset,
 * synchronize, trim, Tensor.read/write, Device.free) and by Gpu.collect:
 * - a device: neat_device_destroy waits for its work; so does neat_comm_destroy, so a comm
 *   too (after the tensors, before the devices);
 * - a command buffer's root (see below), which cannot be removed inside the GC; and, for a
 *   buffer that recorded a copy to host memory, the buffer itself: its work may still write
 *   into a Bigarray the root keeps alive, so the drain waits for it before the root goes;
 * - a tensor or command buffer finalized while a device is being destroyed: the library
 *   forbids any call on a device's objects during neat_device_destroy, and the GC may run
 *   on another thread meanwhile. Device destroys hold `destroying` for writing; finalizers
 *   only try it for reading and defer when they cannot have it.
 * Entries are keyed by device, so that a call on one device never waits for another's
 * work; a device's own entry (all of its objects are then unreachable) and the entries of
 * a device already freed go with any call.
 *
 * GC pressure: a tensor's block is allocated with caml_alloc_custom(ops, size, bytes,
 * budget), so that the GC runs about one major cycle per `budget` bytes of tensors, the
 * budget being the device's (Device.create ?gc_budget; by default a quarter of its memory,
 * 1 GiB when unknown). caml_alloc_custom_mem would count device bytes against the host heap:
 * with a small heap and big tensors, nearly every allocation asked for a major slice.
 *
 * Command buffers keep what was recorded into them alive (a replay must not meet a tensor
 * the GC destroyed, nor a copy a Bigarray the GC freed) through a generational global root,
 * so that the OCaml record holds nothing mutable and compare and Hashtbl.hash of it never
 * change.
 *
 * Errors raise the exception gpu.ml registers as "neatml.error", with the message copied to
 * the C stack before anything is allocated.
 */
#include "neatml_stubs.h"

#include <caml/alloc.h>
#include <caml/callback.h>
#include <caml/custom.h>
#include <caml/fail.h>
#include <caml/memory.h>
#include <caml/threads.h>

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- errors ----------------------------------------------------------------------------- */

/* Gpu.Status.t lists the errors in the order of their codes: Invalid_argument (-1) is
 * constructor 0, ..., Timeout (-10) is constructor 9. */
static value status_to_variant(neat_status s) {
    if (s <= NEAT_ERR_INVALID_ARGUMENT && s >= NEAT_ERR_TIMEOUT) return Val_int(-(int)s - 1);
    return Val_int(-(int)NEAT_ERR_INTERNAL - 1);
}

void neatml_raise_msg(neat_status s, const char *text) {
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

void neatml_check(neat_status s) {
    if (s != NEAT_OK) neatml_raise_msg(s, neat_last_error());
}

int neatml_int_arg(value v, const char *fn, const char *name) {
    intnat n = Long_val(v);
    if (n < INT_MIN || n > INT_MAX) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s: %s is %ld: it does not fit a C int", fn, name, (long)n);
        neatml_raise_msg(NEAT_ERR_INVALID_ARGUMENT, msg);
    }
    return (int)n;
}

value neatml_status_string(value status) {
    return caml_copy_string(neat_status_string((neat_status)(-Int_val(status) - 1)));
}

/* ---- the deferred-free list ------------------------------------------------------------- */

typedef struct deferred {
    struct deferred *next;
    handle_kind kind;
    void *handle;        /* NULL when only the root is left to remove */
    neat_device *device; /* the key: whose calls may destroy it */
    value *recorded;     /* a command buffer's root, NULL once removed */
    int host_writes;     /* a command buffer whose work may write host memory: wait first */
} deferred;

static pthread_mutex_t deferred_lock = PTHREAD_MUTEX_INITIALIZER;
static deferred *deferred_head;

/* Held for writing by every neat_device_destroy, for reading by every other destroy. */
static pthread_rwlock_t destroying = PTHREAD_RWLOCK_INITIALIZER;

/* ---- open comms ------------------------------------------------------------------------- */

typedef struct open_comm {
    struct open_comm *next;
    neat_comm *comm;
    neat_device *device;
} open_comm;

static pthread_mutex_t comms_lock = PTHREAD_MUTEX_INITIALIZER;
static open_comm *comms_head;

int neatml_comm_opened(neat_comm *comm, neat_device *dev) {
    open_comm *c = malloc(sizeof *c);
    if (c == NULL) return 0;
    c->comm = comm;
    c->device = dev;
    pthread_mutex_lock(&comms_lock);
    c->next = comms_head;
    comms_head = c;
    pthread_mutex_unlock(&comms_lock);
    return 1;
}

/* Take off the list the entry of `comm`, or every entry of `dev` when comm is NULL. */
static open_comm *take_comms(const neat_comm *comm, const neat_device *dev) {
    open_comm *taken = NULL;
    pthread_mutex_lock(&comms_lock);
    for (open_comm **link = &comms_head; *link != NULL;) {
        open_comm *c = *link;
        if (comm != NULL ? c->comm == comm : c->device == dev) {
            *link = c->next;
            c->next = taken;
            taken = c;
        } else {
            link = &c->next;
        }
    }
    pthread_mutex_unlock(&comms_lock);
    return taken;
}

static void destroy_comms(open_comm *list) {
    while (list != NULL) {
        open_comm *next = list->next;
        neat_comm_destroy(list->comm);
        free(list);
        list = next;
    }
}

void neatml_destroy_comm(neat_comm *comm) {
    open_comm *c = take_comms(comm, NULL);
    if (c == NULL) return;
    pthread_rwlock_rdlock(&destroying);
    destroy_comms(c);
    pthread_rwlock_unlock(&destroying);
}

void neatml_destroy_device(neat_device *dev) {
    pthread_rwlock_wrlock(&destroying);
    destroy_comms(take_comms(NULL, dev));
    neat_device_destroy(dev);
    pthread_rwlock_unlock(&destroying);
}

static void defer(handle_kind kind, void *handle, const neatml_block *b, int host_writes) {
    deferred *d = malloc(sizeof *d);
    if (d == NULL) /* no host memory for the entry: leak it rather than wait in the GC */
        return;
    d->kind = kind;
    d->handle = handle;
    d->device = b->device;
    d->recorded = b->recorded;
    d->host_writes = host_writes;
    pthread_mutex_lock(&deferred_lock);
    d->next = deferred_head;
    deferred_head = d;
    pthread_mutex_unlock(&deferred_lock);
}

/* Destroy a tensor or command buffer now if no device is being destroyed; 0 if not. */
static int try_destroy(handle_kind kind, void *handle) {
    if (pthread_rwlock_tryrdlock(&destroying) != 0) return 0;
    if (kind == KIND_CMDBUF)
        neat_cmdbuf_destroy(handle);
    else
        neat_tensor_destroy(handle);
    pthread_rwlock_unlock(&destroying);
    return 1;
}

/* Whether a device handle is still open (a device freed explicitly is not: the destroys of
 * its objects' entries are no-ops, and any call may take them). Never waits. */
static int device_is_open(neat_device *dev) {
    neat_memory_stats m;
    return neat_device_memory_stats(dev, &m) == NEAT_OK;
}

static void remove_root(deferred *d) {
    if (d->recorded != NULL) {
        caml_remove_generational_global_root(d->recorded);
        free(d->recorded);
        d->recorded = NULL;
    }
}

/* With the runtime lock held, outside the GC: removes the root of every command buffer
 * whose work writes no host memory any more (what it kept alive may go at the next
 * collection), and takes out the entries of `dev` (of every device when `all`), every
 * device's own entry, the entries of devices already freed and every entry left with
 * nothing to destroy. */
static deferred *take(const neat_device *dev, int all) {
    deferred *taken = NULL;
    /* A device being destroyed must not be asked whether it is open: its entries wait. */
    int may_ask = pthread_rwlock_tryrdlock(&destroying) == 0;
    pthread_mutex_lock(&deferred_lock);
    deferred **link = &deferred_head;
    while (*link != NULL) {
        deferred *d = *link;
        if (!(d->handle != NULL && d->host_writes)) remove_root(d);
        if (all || d->handle == NULL || d->kind == KIND_DEVICE || d->device == dev ||
            (may_ask && !device_is_open(d->device))) {
            *link = d->next;
            d->next = taken;
            taken = d;
        } else {
            link = &d->next;
        }
    }
    pthread_mutex_unlock(&deferred_lock);
    if (may_ask) pthread_rwlock_unlock(&destroying);
    return taken;
}

/* With the runtime lock released: destroys what take took, command buffers first (waiting
 * for those that write host memory), then tensors, then comms still listed, devices last (a device's destroy releases what is
 * left of it; a later destroy of one of its handles is ignored, handles being
 * generation-checked). */
static void destroy_taken(deferred *list) {
    pthread_rwlock_rdlock(&destroying);
    for (deferred *d = list; d != NULL; d = d->next)
        if (d->kind == KIND_CMDBUF && d->handle != NULL) {
            if (d->host_writes)
                (void)neat_cmdbuf_wait(d->handle); /* nobody is left to hear its failure */
            neat_cmdbuf_destroy(d->handle);
        }
    for (deferred *d = list; d != NULL; d = d->next)
        if (d->kind == KIND_TENSOR) neat_tensor_destroy(d->handle);
    for (deferred *d = list; d != NULL; d = d->next)
        if (d->kind == KIND_COMM) destroy_comms(take_comms(d->handle, NULL));
    pthread_rwlock_unlock(&destroying);
    for (deferred *d = list; d != NULL; d = d->next)
        if (d->kind == KIND_DEVICE) neatml_destroy_device(d->handle);
}

void neatml_drain(const neat_device *dev, int all) {
    deferred *list = take(dev, all);
    if (list == NULL) return;
    caml_release_runtime_system();
    destroy_taken(list);
    caml_acquire_runtime_system();
    while (list != NULL) {
        deferred *next = list->next;
        remove_root(list); /* the roots of buffers waited for above */
        free(list);
        list = next;
    }
}

value neatml_collect(value unit) {
    (void)unit;
    neatml_drain(NULL, 1);
    return Val_unit;
}

/* ---- custom blocks ---------------------------------------------------------------------- */

/* From the GC: no OCaml allocation, no runtime call, never waits for the device. */
static void finalize_device(value v) {
    neatml_block *b = Block_val(v);
    if (b->handle != NULL) defer(KIND_DEVICE, b->handle, b, 0);
}

/* A comm's destroy waits for its device's work: always deferred. */
static void finalize_comm(value v) {
    neatml_block *b = Block_val(v);
    if (b->handle != NULL) defer(KIND_COMM, b->handle, b, 0);
}

static void finalize_tensor(value v) {
    neatml_block *b = Block_val(v);
    if (b->handle != NULL && !try_destroy(KIND_TENSOR, b->handle))
        defer(KIND_TENSOR, b->handle, b, 0);
}

/* The root always goes through the list; the buffer too when its work may still write
 * host memory the root keeps alive. */
static void finalize_cmdbuf(value v) {
    neatml_block *b = Block_val(v);
    void *handle = b->handle;
    if (handle != NULL && !b->host_writes && try_destroy(KIND_CMDBUF, handle)) handle = NULL;
    if (handle != NULL || b->recorded != NULL) defer(KIND_CMDBUF, handle, b, b->host_writes);
}

/* Identity: two blocks are equal when they are the same object, before and after free. */
static int compare_blocks(value a, value b) {
    uint64_t x = Block_val(a)->id, y = Block_val(b)->id;
    return x < y ? -1 : x > y;
}

static intnat hash_block(value v) { return (intnat)Block_val(v)->id; }

#define BLOCK_OPS(name, finalizer)                                                                 \
    static struct custom_operations name = {"neatml." #name,                                       \
                                            finalizer,                                             \
                                            compare_blocks,                                        \
                                            hash_block,                                            \
                                            custom_serialize_default,                              \
                                            custom_deserialize_default,                            \
                                            custom_compare_ext_default,                            \
                                            custom_fixed_length_default}

BLOCK_OPS(device_ops, finalize_device);
BLOCK_OPS(tensor_ops, finalize_tensor);
BLOCK_OPS(cmdbuf_ops, finalize_cmdbuf);
BLOCK_OPS(comm_ops, finalize_comm);

static uint64_t last_id;

value neatml_alloc_block(handle_kind kind, void *handle, neat_device *device, int64_t bytes,
                         int64_t budget) {
    static struct custom_operations *const ops[KIND_COUNT] = {
        [KIND_CMDBUF] = &cmdbuf_ops, [KIND_TENSOR] = &tensor_ops,
        [KIND_COMM] = &comm_ops, [KIND_DEVICE] = &device_ops};
    value v = caml_alloc_custom(ops[kind], sizeof(neatml_block), (mlsize_t)bytes,
                                (mlsize_t)(budget > 0 ? budget : 1));
    neatml_block *b = Block_val(v);
    b->handle = handle;
    b->device = device;
    b->id = __atomic_add_fetch(&last_id, 1, __ATOMIC_RELAXED);
    b->gc_budget = 0;
    b->recorded = NULL;
    b->host_writes = 0;
    return v;
}

void *neatml_live(value v, const char *what) {
    void *h = Block_val(v)->handle;
    if (h == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "Neatml.Gpu: %s used after free", what);
        neatml_raise_msg(NEAT_ERR_INVALID_HANDLE, msg);
    }
    return h;
}
