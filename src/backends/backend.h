/*
 * backend.h — the contract between the core and a backend: the table a backend fills, what
 * it receives, what it owns and what it must hand back. A new backend's author needs this
 * file, op_list.h and ops.h; nothing else of the core.
 *
 * Adding a backend:
 *   1. a folder src/backends/<name>/ holding everything of it (no #ifdef for it elsewhere);
 *   2. its table, `const nm_backend_ops nm_<name>_backend`, with .op = NM_OP_TABLE(<name>)
 *      and the prototypes from NM_DECLARE_OPS(<name>) in its header;
 *   3. one line in registry.c (its place in the AUTO order) and its enum value and name in
 *      neatml.h (neat_backend) and registry.c (backend_names);
 *   4. its build rules (CMake), defining NEATML_HAVE_<NAME> for registry.c.
 *
 * What the core guarantees a backend:
 *   - every op reaching it was validated (handles, shapes, options, aliasing) when it was
 *     recorded; a backend does only arithmetic and resource work. Tensors of an op belong
 *     to the device; tensor->data is the device address (host address on the CPU) and is
 *     NULL exactly when numel is 0. Ops on zero-size tensors reach the backend: they must
 *     launch nothing (and still succeed);
 *   - every tensor recorded in a submitted buffer was alive at commit;
 *   - calls for one device may come from several threads: submit runs under dev->lock (one
 *     at a time per device); completed, wait_seq and the copies may run concurrently with
 *     each other and with submit (see each entry);
 *   - memory a submission uses (tensors, scratch) is not reused before completed() has
 *     passed that submission's seq.
 *
 * What a backend must do:
 *   - device_open sets dev->impl and dev->props (name, total_memory, num_threads) or returns
 *     UNSUPPORTED with a message naming why there is no such device;
 *   - every op function leaves its outputs untouched when it fails, and reports failures by
 *     returning nm_error(status, "fmt", ...) (the message names the public function: op->fn);
 *   - submit/completed/wait_seq: submissions complete in order; a failure while the ops
 *     run stops the rest of that submission and is handed to nm_cmdbuf_fail;
 *   - memory: mem_alloc/mem_free give the core's pool raw device memory; scratch an op needs
 *     comes from nm_scratch_alloc (pool memory held by the buffer until nm_scratch_release).
 *     Caches a backend keeps (algorithms, plans, primitives) are bounded and freed by
 *     device_close.
 *   - never abort, exit or print; no global mutable state (everything hangs off dev->impl).
 */
#ifndef NEATML_BACKEND_H
#define NEATML_BACKEND_H

#include "../core/internal.h"

#define NM_BACKEND_ABI 5

typedef neat_status (*nm_op_fn)(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);

/* Prototypes <prefix>_<name> of every op, and the table of them, for a backend prefix. */
#define NM_OP_DECLARE_(P, E, name, flags)                                                          \
    neat_status P##_##name(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);
#define NM_OP_ENTRY_(P, E, name, flags) [NM_OP_##E] = P##_##name,
#define NM_DECLARE_OPS(prefix) NM_COMPUTE_OP_LIST(NM_OP_DECLARE_, prefix)
#define NM_OP_TABLE(prefix)                                                                        \
    { NM_COMPUTE_OP_LIST(NM_OP_ENTRY_, prefix) }
/* The same with the collectives (op_list.h), for a backend that has them. */
#define NM_DECLARE_OPS_WITH_COLLECTIVES(prefix) NM_OP_LIST(NM_OP_DECLARE_, prefix)
#define NM_OP_TABLE_WITH_COLLECTIVES(prefix)                                                       \
    { NM_OP_LIST(NM_OP_ENTRY_, prefix) }

typedef struct nm_backend_ops {
    int abi_version; /* NM_BACKEND_ABI */
    neat_backend kind;
    const char *name; /* "cpu", "cuda", "metal": as NEATML_BACKEND and neat_backend_name */

    /* Open device `index`: set dev->impl and dev->props (name, memory, threads).
     * Return UNSUPPORTED with a message when there is no such device. */
    neat_status (*device_open)(nm_device *dev, int index);
    /* Release dev->impl; the device is idle and every tensor and buffer is gone. */
    void (*device_close)(nm_device *dev);

    /* Raw device memory for the core's caching pool (never called on the hot path). A
     * failure returns nm_error(OUT_OF_MEMORY, ...) naming the bytes; the core prefixes the
     * public call or the op. */
    neat_status (*mem_alloc)(nm_device *dev, size_t bytes, void **ptr);
    void (*mem_free)(nm_device *dev, void *ptr, size_t bytes);

    /* Synchronous copies between host memory and device memory. The core has waited for
     * every submission that uses that memory; a copy must not wait for unrelated work (on
     * CUDA: not on the device's stream). */
    neat_status (*copy_in)(nm_device *dev, void *dst, const void *src, size_t bytes);
    neat_status (*copy_out)(nm_device *dev, void *dst, const void *src, size_t bytes);

    /* Start the buffer's ops in order after everything submitted before on the device, as
     * submission number `seq` (1, 2, ... per device, increasing), and return without waiting.
     * Called with dev->lock held: it must not wait for the device. A failure while the ops
     * run is given to nm_cmdbuf_fail (with the op's index) before the submission counts as
     * completed; the ops after the failing one do not run. */
    neat_status (*submit)(nm_device *dev, nm_cmdbuf *cb, uint64_t seq);
    /* The highest seq such that every submission up to it has completed and its failures
     * were handed to nm_cmdbuf_fail; never blocks. Called without dev->lock. */
    uint64_t (*completed)(nm_device *dev);
    /* Block until completed() >= seq. Returns a failure of the device itself (a sticky CUDA
     * error), not those of ops (they are in their buffers). Called without dev->lock. */
    neat_status (*wait_seq)(nm_device *dev, uint64_t seq);
    /* Drop backend state of an idle buffer (a CUDA graph) before its ops change or it is
     * destroyed. May be NULL. */
    void (*cmdbuf_release)(nm_device *dev, nm_cmdbuf *cb);

    /* Called when an op is recorded, after the core's validation: return UNSUPPORTED (or
     * another status) with a message for what this backend cannot run exactly as the header
     * says (a size a kernel cannot take, a semantics the vendor library lacks), so that the
     * failure comes at record time and never mid-buffer. May be NULL: everything runs. */
    neat_status (*op_check)(nm_device *dev, const nm_op *op);

    /* Collectives (ABI 4). Each may be NULL: the public call answers UNSUPPORTED.
     * comm_id_create: a new id (rank 0). comm_create: join comm->rank of comm->nranks (set,
     * with comm->timeout, by the core) on comm->dev, set comm->impl; never wait longer than
     * comm->timeout (TIMEOUT). comm_create_all: comms[i] on comms[i]->dev, ranks 0..n-1.
     * comm_destroy: release comm->impl; the core has waited for the device. The collective
     * ops (op_list.h) take a peer's disagreement, death or silence past comm->timeout as a
     * failure of the op (nm_cmdbuf_fail), never a wait without end. */
    neat_status (*comm_id_create)(neat_comm_id *id);
    neat_status (*comm_create)(nm_comm *comm, const neat_comm_id *id);
    neat_status (*comm_create_all)(int n, nm_comm *const *comms);
    void (*comm_destroy)(nm_comm *comm);

    /* One function per op of op_list.h (NM_OP_TABLE); an entry left NULL makes recording
     * that op answer UNSUPPORTED. */
    nm_op_fn op[NM_OP__COUNT];
} nm_backend_ops;

/* registry.c: the table of a backend kind, or NULL when it was not built. */
const nm_backend_ops *nm_backend_find(neat_backend kind);
/* The backends that were built, best first: the order AUTO tries them in. */
extern const nm_backend_ops *const nm_backend_auto_order[];

#endif
