/*
 * neatml_blocks.c — the custom blocks that hold the library's handles for Neatml.Gpu, their
 * finalizers and the deferred-free list those feed, and raising Gpu.Error.
 *
 * Finalizers never call the library. neat_*_destroy waits for the device, and a finalizer
 * runs inside the GC, on whatever thread allocated, holding the runtime lock: a finalizer
 * only moves the handle onto a mutex-protected list (malloc, no OCaml allocation, no runtime
 * call). The stubs of neatml_objects.c empty it, with the runtime lock released, at the
 * start of the calls that may wait for the device anyway (create, wait, reset, synchronize,
 * trim, host copies, free), and Gpu.collect does. Commit does not: a tensor's destroy waits
 * for the device's earlier work, which would make the asynchronous commit wait too. Entries
 * are keyed by device, so that a call on one device never destroys the objects of another
 * (which another thread may be using); a device's own entry (all of its objects are then
 * unreachable) and the entries of a device already freed go with any call.
 *
 * GC pressure: a tensor's block is allocated with caml_alloc_custom(ops, size, bytes,
 * budget), so that the GC runs about one major cycle per `budget` bytes of tensors, the
 * budget being the device's (Device.create ?gc_budget; by default a quarter of its memory,
 * 1 GiB when unknown). caml_alloc_custom_mem would count device bytes against the host heap:
 * with a small heap and big tensors, nearly every allocation asked for a major slice.
 *
 * Command buffers keep the tensors recorded into them alive (a replay must not meet a tensor
 * the GC destroyed) through a generational global root, so that the OCaml record holds
 * nothing mutable and compare and Hashtbl.hash of it never change. A root cannot be removed
 * inside the GC: the finalizer hands it over with the handle, and the next drain removes it.
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

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- errors ----------------------------------------------------------------------------- */

/* Gpu.Status.t lists the errors in the order of their codes: Invalid_argument (-1) is
 * constructor 0, ..., Timeout (-10) is constructor 9. */
static value status_to_variant(neat_status s)
{
    if (s <= NEAT_ERR_INVALID_ARGUMENT && s >= NEAT_ERR_TIMEOUT)
        return Val_int(-(int)s - 1);
    return Val_int(-(int)NEAT_ERR_INTERNAL - 1);
}

void neatml_raise_msg(neat_status s, const char *text)
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

void neatml_check(neat_status s)
{
    if (s != NEAT_OK)
        neatml_raise_msg(s, neat_last_error());
}

value neatml_status_string(value status)
{
    return caml_copy_string(neat_status_string((neat_status)(-Int_val(status) - 1)));
}

/* ---- the deferred-free list ------------------------------------------------------------- */

struct neatml_deferred {
    struct neatml_deferred *next;
    handle_kind kind;
    void *handle;        /* NULL when an explicit free came first */
    neat_device *device; /* the key: whose calls may destroy it */
    value *recorded;     /* a command buffer's root, NULL once removed */
};
typedef struct neatml_deferred deferred;

static pthread_mutex_t deferred_lock = PTHREAD_MUTEX_INITIALIZER;
static deferred *deferred_head;

static void destroy_handle(handle_kind kind, void *handle)
{
    if (kind == KIND_CMDBUF)
        neat_cmdbuf_destroy(handle);
    else if (kind == KIND_TENSOR)
        neat_tensor_destroy(handle);
    else
        neat_device_destroy(handle);
}

/* From a finalizer: no OCaml allocation, no runtime call, never waits for the device. */
static void defer(handle_kind kind, const neatml_block *b)
{
    if (b->handle == NULL && b->recorded == NULL)
        return;
    deferred *d = malloc(sizeof *d);
    if (d == NULL) {
        /* No host memory for the entry: release now (this may wait) rather than leak the
         * device's memory; a root, which cannot be removed here, is leaked. */
        destroy_handle(kind, b->handle);
        return;
    }
    d->kind = kind;
    d->handle = b->handle;
    d->device = b->device;
    d->recorded = b->recorded;
    pthread_mutex_lock(&deferred_lock);
    d->next = deferred_head;
    deferred_head = d;
    pthread_mutex_unlock(&deferred_lock);
}

/* Whether a device handle is still open (a device freed explicitly is not: the destroys of
 * its objects' entries are no-ops, and any call may take them). Never waits. */
static int device_is_open(neat_device *dev)
{
    neat_memory_stats m;
    return neat_device_memory_stats(dev, &m) == NEAT_OK;
}

/* With the runtime lock held, outside the GC: removes the root of every command buffer
 * handed over (what it kept alive may go at the next collection; the buffer itself can no
 * longer be committed), and takes out the entries of `dev` (of every device when `all`),
 * every device's own entry, the entries of devices already freed and every entry left with
 * nothing to destroy. */
deferred *neatml_deferred_take(const neat_device *dev, int all)
{
    deferred *taken = NULL;
    pthread_mutex_lock(&deferred_lock);
    deferred **link = &deferred_head;
    while (*link != NULL) {
        deferred *d = *link;
        if (d->recorded != NULL) {
            caml_remove_generational_global_root(d->recorded);
            free(d->recorded);
            d->recorded = NULL;
        }
        if (all || d->handle == NULL || d->kind == KIND_DEVICE || d->device == dev ||
            !device_is_open(d->device)) {
            *link = d->next;
            d->next = taken;
            taken = d;
        } else {
            link = &d->next;
        }
    }
    pthread_mutex_unlock(&deferred_lock);
    return taken;
}

/* With the runtime lock released: destroys what deferred_take took, command buffers first,
 * devices last (a device's destroy releases what is left of it; a later destroy of one of
 * its handles is ignored, handles being generation-checked). */
void neatml_deferred_destroy(deferred *list)
{
    for (int kind = 0; kind < KIND_COUNT; kind++)
        for (deferred *d = list; d != NULL; d = d->next)
            if (d->kind == (handle_kind)kind)
                destroy_handle(d->kind, d->handle); /* NULL is ignored */
    while (list != NULL) {
        deferred *next = list->next;
        free(list);
        list = next;
    }
}

value neatml_collect(value unit)
{
    (void)unit;
    deferred *pending = neatml_deferred_take(NULL, 1);
    if (pending != NULL) {
        caml_release_runtime_system();
        neatml_deferred_destroy(pending);
        caml_acquire_runtime_system();
    }
    return Val_unit;
}

/* ---- custom blocks ---------------------------------------------------------------------- */

static void finalize_device(value v) { defer(KIND_DEVICE, Block_val(v)); }
static void finalize_tensor(value v) { defer(KIND_TENSOR, Block_val(v)); }
static void finalize_cmdbuf(value v) { defer(KIND_CMDBUF, Block_val(v)); }

/* Identity: two blocks are equal when they are the same object, before and after free. */
static int compare_blocks(value a, value b)
{
    uint64_t x = Block_val(a)->id, y = Block_val(b)->id;
    return x < y ? -1 : x > y;
}

static intnat hash_block(value v) { return (intnat)Block_val(v)->id; }

#define BLOCK_OPS(name, finalizer)                                                           \
    static struct custom_operations name = {                                                 \
        "neatml." #name,   finalizer,           compare_blocks,          hash_block,         \
        custom_serialize_default, custom_deserialize_default, custom_compare_ext_default,    \
        custom_fixed_length_default}

BLOCK_OPS(device_ops, finalize_device);
BLOCK_OPS(tensor_ops, finalize_tensor);
BLOCK_OPS(cmdbuf_ops, finalize_cmdbuf);

static uint64_t last_id;

value neatml_alloc_block(handle_kind kind, void *handle, neat_device *device, int64_t bytes,
                         int64_t budget)
{
    static struct custom_operations *const ops[KIND_COUNT] = {
        [KIND_CMDBUF] = &cmdbuf_ops, [KIND_TENSOR] = &tensor_ops, [KIND_DEVICE] = &device_ops};
    value v = caml_alloc_custom(ops[kind], sizeof(neatml_block), (mlsize_t)bytes,
                                (mlsize_t)(budget > 0 ? budget : 1));
    neatml_block *b = Block_val(v);
    b->handle = handle;
    b->device = device;
    b->id = __atomic_add_fetch(&last_id, 1, __ATOMIC_RELAXED);
    b->gc_budget = 0;
    b->recorded = NULL;
    return v;
}

void *neatml_live(value v, const char *what)
{
    void *h = Block_val(v)->handle;
    if (h == NULL) {
        char msg[128];
        snprintf(msg, sizeof msg, "Neatml.Gpu: %s used after free", what);
        neatml_raise_msg(NEAT_ERR_INVALID_HANDLE, msg);
    }
    return h;
}
