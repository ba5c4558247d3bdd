/*
 * internal.h — the objects behind the public handles, shared by the core and the backends.
 *
 * Public handles (neat_device*, neat_tensor*, neat_cmdbuf*) are not pointers to these
 * structs: they encode a slot of the handle table and its generation (handle.c), so a
 * destroyed handle is recognised instead of dereferenced. Inside the library everything
 * works on the resolved nm_* structs.
 */
#ifndef NEATML_INTERNAL_H
#define NEATML_INTERNAL_H

#include "neatml.h"
#include "op_list.h"
#include "ops.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NM_HIDDEN __attribute__((visibility("hidden")))

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nm_device nm_device;
typedef struct nm_cmdbuf nm_cmdbuf;
typedef struct nm_backend_ops nm_backend_ops;

/* ---- errors (status.c) ---------------------------------------------------------------- */

#define NM_MSG_MAX 512

/* Format the calling thread's last-error message and return `status`. */
neat_status nm_error(neat_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Set the message verbatim (used to hand an asynchronous failure to the waiting thread). */
void nm_set_error_text(const char *msg);

/* ---- handles (handle.c) ----------------------------------------------------------------- */

typedef enum nm_handle_kind {
    NM_H_DEVICE = 1,
    NM_H_TENSOR = 2,
    NM_H_CMDBUF = 3,
    NM_H_COMM = 4
} nm_handle_kind;

/* A new handle for obj, NULL when out of memory. */
void *nm_handle_new(nm_handle_kind kind, void *obj);
/* The object of a live handle of that kind, NULL otherwise (NULL, destroyed, foreign). */
void *nm_handle_get(const void *handle, nm_handle_kind kind);
/* Invalidate the handle: later nm_handle_get calls on it return NULL. */
void nm_handle_free(const void *handle);

/* ---- caching pool (pool.c) --------------------------------------------------------------- */

/* A block of device memory. `size` is what the pool accounts: the rounded bucket size, or
 * the exact request in the debug pool (NEATML_DEBUG_POOL=1). */
typedef struct nm_block {
    void *ptr;
    size_t size;
    size_t request;        /* bytes asked for: the debug pool's canary starts there */
    struct nm_block *next; /* free list / owner's list */
    struct nm_block *live_prev, *live_next; /* debug pool: every block in use */
} nm_block;

typedef struct nm_pool {
    pthread_mutex_t lock;
    struct nm_pool_bucket *buckets; /* free blocks by size */
    int64_t in_use, reserved, peak;
    int64_t limit;   /* reserved never exceeds it (neat_device_set_memory_limit) */
    int debug;       /* NEATML_DEBUG_POOL: exact sizes, no cache, poison, canaries */
    nm_block *live;  /* debug pool: blocks in use, for the canary check */
    int64_t overrun; /* debug pool: size of a freed block whose canary had changed, 0 none */
} nm_pool;

/* What the pool may reserve when no limit was set: the memory free when the device opened
 * (dev->mem_available), else the device's total. */
int64_t nm_pool_default_limit(nm_device *dev);

/* Read NEATML_DEBUG_POOL and set the default limit (the backend's device_open has set
 * props.total_memory and may have set dev->mem_available). */
void nm_pool_init(nm_device *dev);
/* A block of at least `bytes` (0 allowed: a block of size 0 with ptr NULL is valid).
 * Returns OUT_OF_MEMORY with a message when the limit, the cache and the backend are
 * exhausted. */
neat_status nm_pool_alloc(nm_device *dev, size_t bytes, nm_block **out);
void nm_pool_free(nm_device *dev, nm_block *block);
/* Give every cached block back to the backend. */
void nm_pool_trim(nm_device *dev);
/* Trim, then free the bookkeeping; the device is being destroyed. */
void nm_pool_destroy(nm_device *dev);
void nm_pool_stats(nm_device *dev, neat_memory_stats *out);
void nm_pool_reset_peak(nm_device *dev);
/* Debug pool: INTERNAL with a message naming the public call `fn` when a canary after a
 * block in use, or freed since the last check, was overwritten (a write past a tensor's
 * end); NEAT_OK otherwise and outside the debug pool. */
neat_status nm_pool_check(nm_device *dev, const char *fn);

/* ---- objects ------------------------------------------------------------------------------
 * Lifetimes. A tensor object is referenced by its handle and by every submission in flight
 * that uses it; its storage by every tensor (views) on it. Destroying a handle drops one
 * reference, so memory a running submission uses returns to the pool only when that
 * submission has completed (nm_reap), and destroy never waits for the device.
 * dev->lock guards the lists, every reference count, the ops of every command buffer of the
 * device and the in-flight list; it is never held while waiting for the device. */

typedef struct nm_submission nm_submission;

struct nm_device {
    const nm_backend_ops *be;
    void *impl; /* the backend's state */
    neat_device *handle;
    neat_device_props props; /* filled by the backend's device_open */
    int64_t mem_available;   /* set by device_open: memory free for the pool now, 0 unknown */
    neat_math_mode math;
    nm_pool pool;
    pthread_mutex_t lock;
    nm_tensor *tensors;    /* live tensor objects (a handle or a submission holds them) */
    nm_cmdbuf *cmdbufs;    /* live command buffers, destroyed ones still running included */
    struct nm_comm *comms; /* live communicators */
    uint64_t next_seq;     /* submissions so far: the next one gets next_seq + 1 */
    uint64_t reaped_seq;   /* every submission up to it has been reaped (nm_reap) */
    nm_submission *inflight, *inflight_tail; /* in submission order */
};

/* Memory shared by a tensor and its views. */
typedef struct nm_storage {
    nm_block *block;
    int refs;          /* tensor objects on it */
    uint64_t last_use; /* seq of the latest submission that used it (host copies wait) */
} nm_storage;

struct nm_tensor {
    nm_device *dev;
    nm_storage *storage;
    /* device pointer (host pointer on the CPU); NULL when numel is 0. Points at float32 only
     * when dtype is NEAT_F32: half types are uint16_t bits */
    float *data;
    neat_dtype dtype; /* views keep it; nm_dtype_check (record.c) checks it per op */
    int ndim;
    int64_t shape[NEAT_MAX_DIMS];
    int64_t numel;
    neat_tensor *handle;    /* NULL once destroyed */
    int refs;               /* the handle + submissions in flight */
    uint64_t mark;          /* seq of the submission that last took a reference */
    nm_tensor *prev, *next; /* device list */
};

/* Recorded ops: the kinds come from op_list.h, their arguments from ops.h. */
#define NM_OP_ENUM_(P, E, name, flags) NM_OP_##E,
typedef enum nm_op_kind { NM_OP_LIST(NM_OP_ENUM_, _) NM_OP__COUNT } nm_op_kind;
#undef NM_OP_ENUM_

#define NM_OP_MAX_TENSORS 8

/* A recorded op. Its tensors are the fixed slots of its args (NM_TENSORS) and, for an op
 * whose tensors are the caller's list (neat_all_reduce_bucket), `list`: a heap array owned
 * by the op (nm_record takes it; freed by nm_op_free_list at reset and destroy). The
 * alternative, a bucket recorded as one op per tensor or a fixed maximum of slots, would
 * lose the one transfer or cap the list; this keeps every other op as it was, and the core
 * walks both (nm_op_tensors, nm_op_list) wherever it walks tensors: the commit-time handle
 * check, the references a submission holds. */
typedef struct nm_op {
    nm_op_kind kind;
    const char *fn;                          /* the public function that recorded it */
    neat_math_mode math;                     /* the device's mode when recorded */
    int ntensors;                            /* handles[] in use */
    neat_tensor *handles[NM_OP_MAX_TENSORS]; /* re-checked at every commit */
    int nlist;                               /* list[], list_handles[]: 0 and NULL */
    nm_tensor **list;                        /*   unless the op has a list */
    neat_tensor **list_handles;              /* re-checked at every commit */
    const neat_comm *comm;                   /* collectives: re-checked at every commit */
    union {
#define NM_OP_MEMBER_(P, E, name, flags) nm_##name##_args name;
        NM_OP_LIST(NM_OP_MEMBER_, _)
#undef NM_OP_MEMBER_
    } u;
} nm_op;

/* The tensors of op (NULL entries included) and their count. */
nm_tensor *const *nm_op_tensors(const nm_op *op, int *count);
/* The op's list of tensors (NULL, 0 for ops without one). */
static inline nm_tensor *const *nm_op_list(const nm_op *op, int *count) {
    *count = op->nlist;
    return op->list;
}
/* Free the op's list (it owns it). */
void nm_op_free_list(nm_op *op);
/* NM_OPF_* of a kind. */
int nm_op_flags(nm_op_kind kind);

/* A communicator (comm.c): one device's membership of a group of ranks. The backend's
 * state is impl (an MPI or NCCL communicator). broken: a collective timed out or a peer
 * failed; later collectives on it fail at once (written with __atomic_store_n). */
struct nm_comm {
    nm_device *dev;
    neat_comm *handle;
    int rank, nranks;
    double timeout; /* seconds, 0 = forever */
    int broken;
    void *impl;
    nm_comm *prev, *next; /* the device's list (dev->lock): device destroy releases them */
};

struct nm_cmdbuf {
    nm_device *dev;
    neat_cmdbuf *handle; /* NULL once destroyed (freed when its work completes) */
    nm_op *ops;
    int64_t nops, cap;
    bool committed;    /* sealed: no more recording until reset */
    uint64_t commits;  /* submissions so far */
    uint64_t last_seq; /* seq of its latest submission: idle once that completed */
    void *impl;        /* backend state (a captured CUDA graph) */
    nm_block *scratch; /* pool blocks held for the ops (nm_scratch_alloc) */
    int64_t device_ns; /* device time of the latest completed submission, 0: none
                                  (written by the backend with __atomic_store_n) */
    /* The first failure since the last wait, under dev->lock: */
    neat_status async_status;
    char async_msg[NM_MSG_MAX];
    nm_cmdbuf *prev, *next; /* device list */
};

/* Pool memory tied to the command buffer: kept until nm_scratch_release (the CPU backend
 * releases after each run; CUDA keeps it for the life of a captured graph). */
neat_status nm_scratch_alloc(nm_cmdbuf *cb, size_t bytes, void **ptr);
void nm_scratch_release(nm_cmdbuf *cb);

/* A failure of op `index` of cb while it ran (first one wins until wait reports it); the
 * message becomes "<op's function> (op <index> of <n>): <detail>". Called by backends,
 * from any thread; takes dev->lock. */
void nm_cmdbuf_fail(nm_cmdbuf *cb, int64_t index, neat_status status, const char *detail);
/* The same for a failure that belongs to no single op (a device fault): message as given. */
void nm_cmdbuf_fail_all(nm_cmdbuf *cb, neat_status status, const char *msg);

/* Release what the submissions completed up to the backend's completed() hold: tensor
 * references, and command buffers destroyed while they ran. Takes dev->lock. */
void nm_reap(nm_device *dev);

/* ---- helpers for recording (record.c) ----------------------------------------------------- */

/* "2x5", "[]" for a scalar; buf of NM_SHAPE_STR bytes. */
#define NM_SHAPE_STR 96
const char *nm_shape_str(const nm_tensor *t, char *buf);

/* Resolve the command buffer of an op call: checks the handle and that it still records. */
neat_status nm_begin(const char *fn, neat_cmdbuf *h, nm_cmdbuf **out);
/* Resolve a tensor argument of `fn` named `arg` for cb's device. required = 0 lets NULL
 * through as *out = NULL. */
neat_status nm_arg(const char *fn, const char *arg, const nm_cmdbuf *cb, const neat_tensor *h,
                   int required, nm_tensor **out);
/* INVALID_ARGUMENT when the two tensors share memory. */
neat_status nm_no_alias(const char *fn, const char *out_name, const nm_tensor *out,
                        const char *in_name, const nm_tensor *in);
/* Append op (kind and args set) to cb: UNSUPPORTED when the backend lacks the op or its
 * op_check refuses it; sets op->fn and op->math; keeps the handles of the op's non-NULL
 * tensors for the commit-time check. */
neat_status nm_record(const char *fn, nm_cmdbuf *cb, nm_op *op);

/* ops_comm.c: resolve a comm argument of `fn` for cb's device (INVALID_ARGUMENT for NULL,
 * INVALID_HANDLE, DEVICE_MISMATCH). */
neat_status nm_comm_arg(const char *fn, const nm_cmdbuf *cb, const neat_comm *h, nm_comm **out);

/* Total elements of a shape, -1 on overflow of int64 or of the byte count. */
int64_t nm_shape_numel(int ndim, const int64_t *shape);

#ifdef __cplusplus
}
#endif
#endif
