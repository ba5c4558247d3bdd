/*
 * neatml_stubs.h — what the stub files of Neatml.Gpu share: raising Gpu.Error, the custom
 * blocks that hold the library's handles, their finalizers and the deferred-free list for
 * what a finalizer cannot release itself (neatml_blocks.c), used by the objects' stubs
 * (neatml_objects.c) and the operations' (neatml_ops.c).
 */
#ifndef NEATML_STUBS_H
#define NEATML_STUBS_H

#define CAML_NAME_SPACE
#include <caml/mlvalues.h>

#include <stdint.h>

#include "neatml.h"

/* ---- errors ---- */

/* Raise Gpu.Error (status, text); text NULL or "" gives the status's name. */
void neatml_raise_msg(neat_status s, const char *text) __attribute__((noreturn));

/* Raise Gpu.Error (status, neat_last_error ()) unless s is NEAT_OK. */
void neatml_check(neat_status s);

/* ---- handle blocks ----
 * Every device, tensor, command buffer and comm is a custom block holding this struct. `id` is
 * drawn from a counter when the block is made: compare and hash read it, so equality and
 * hashing never change, not even when free sets `handle` to NULL. */
typedef struct neatml_block {
    void *handle;        /* the library's handle; NULL once freed */
    neat_device *device; /* the device the handle belongs to (a device's own handle) */
    uint64_t id;
    int64_t gc_budget; /* devices: the bytes of tensors the GC may see allocated per
                            major cycle (caml_alloc_custom's max); others 0 */
    value *recorded;   /* command buffers: a malloc'd generational global root holding the
                            tensors and host Bigarrays recorded since the last reset (a
                            Gpu.Cmdbuf.kept list); others NULL */
    int host_writes;   /* command buffers: a copy to host memory was recorded since the
                            last reset, so the Bigarrays must outlive the buffer's work */
} neatml_block;

#define Block_val(v) ((neatml_block *)Data_custom_val(v))

/* The kinds of blocks, in the order the deferred list destroys them. */
typedef enum { KIND_CMDBUF, KIND_TENSOR, KIND_COMM, KIND_DEVICE, KIND_COUNT } handle_kind;

/* A new block for `handle` of `device`; `bytes` of device memory counted against `budget`
 * (caml_alloc_custom's mem and max). Fields other than handle, device and id are zero. */
value neatml_alloc_block(handle_kind kind, void *handle, neat_device *device, int64_t bytes,
                         int64_t budget);

/* Devices and comms hold threads, streams and library handles, not memory the GC sees:
 * each of their blocks counts as 1 / NEATML_HEAVY_PER_CYCLE of a major cycle, so that a
 * loop dropping them without free has at most about that many waiting for a collection
 * (with mem 0, only the minor collections other allocations bring would find them: a
 * loop of dropped CPU devices held over a thousand worker threads). */
#define NEATML_HEAVY_PER_CYCLE 8

/* ---- the deferred-free list ----
 * What finalizers cannot do inside the GC: remove a command buffer's root, destroy a
 * device (destroy waits for it), wait for a buffer whose copies still write host memory,
 * or destroy anything while a device is being destroyed. neatml_drain empties it: it takes,
 * with the runtime lock held, the entries of `dev` (of every device when `all`), every
 * device's own entry and those of devices already freed, removes every root it can, then
 * releases the runtime lock (only if there is work) to destroy what it took: command
 * buffers first, devices last. Call it only from a stub that holds no unrooted value. */
void neatml_drain(const neat_device *dev, int all);

/* Destroy a device, excluding the finalizers' destroys meanwhile (they defer instead);
 * call with the runtime lock released. Its comms still open go first. */
void neatml_destroy_device(neat_device *dev);

/* ---- open comms ----
 * neat_device_destroy does not release a device's comms, and a comm destroyed after its
 * device would touch the freed device. So the bindings list every comm they opened with
 * its device: neatml_destroy_device destroys the comms of its device first, and a comm is
 * destroyed only by whoever takes it off the list (once, never after its device). */

/* List a new comm of dev; 0 when there is no host memory for the entry. */
int neatml_comm_opened(neat_comm *comm, neat_device *dev);

/* Destroy the comm if it is still listed (neat_comm_destroy waits for its device's work:
 * call with the runtime lock released). */
void neatml_destroy_comm(neat_comm *comm);

/* An OCaml int passed to a C `int` parameter: Error (Invalid_argument, "<fn>: <name> is <v>:
 * it does not fit a C int") when it is outside [INT_MIN, INT_MAX]. Int_val alone would keep
 * the low 32 bits, turning 2^32 into 0, a valid-looking value. */
int neatml_int_arg(value v, const char *fn, const char *name);

/* The element count of a Bigarray (the product of its dimensions). */
int64_t neatml_bigarray_count(value ba);

/* The live handle of a block, or Error (Invalid_handle, "... used after free"). */
void *neatml_live(value v, const char *what);

#define DEV(v) ((neat_device *)neatml_live((v), "device"))
#define TEN(v) ((neat_tensor *)neatml_live((v), "tensor"))
#define CB(v) ((neat_cmdbuf *)neatml_live((v), "command buffer"))
#define COMM(v) ((neat_comm *)neatml_live((v), "comm"))
/* An OCaml `Tensor.handle option`: None is NULL (the C API's "absent"). */
#define OPT_TEN(v) (Is_block(v) ? TEN(Field((v), 0)) : NULL)

#endif /* NEATML_STUBS_H */
