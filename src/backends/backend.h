/*
 * backend.h — the table every backend fills, and the recorded-op record it receives.
 *
 * The core (src/core/) validates every argument when an op is recorded and stores it as an
 * nm_op with resolved tensors and precomputed sizes. A backend receives only valid ops and
 * does only arithmetic and resource work. An op entry left NULL makes recording that op
 * answer NEAT_ERR_UNSUPPORTED.
 *
 * Execution model: submit() starts the buffer's ops in order after everything submitted
 * before on the device and returns; wait() blocks until every submission of the buffer has
 * completed and returns the first failure among them (cb->async_status, message in
 * cb->async_msg, which the core hands to neat_last_error). Op functions report failures by
 * returning nm_error(status, "fmt", ...).
 */
#ifndef NEATML_BACKEND_H
#define NEATML_BACKEND_H

#include "../core/internal.h"

#define NM_BACKEND_ABI 1

typedef neat_status (*nm_op_fn)(nm_device *dev, nm_cmdbuf *cb, const nm_op *op);

typedef struct nm_backend_ops {
    int abi_version; /* NM_BACKEND_ABI */
    neat_backend kind;
    const char *name; /* "cpu", "cuda" */

    /* Open device `index`: set dev->impl and dev->props (name, memory, threads).
     * Return UNSUPPORTED with a message when there is no such device. */
    neat_status (*device_open)(nm_device *dev, int index);
    /* Release dev->impl; the device is idle and every tensor and buffer is gone. */
    void (*device_close)(nm_device *dev);

    /* Raw device memory for the core's caching pool (never called on the hot path). */
    neat_status (*mem_alloc)(nm_device *dev, size_t bytes, void **ptr);
    void (*mem_free)(nm_device *dev, void *ptr, size_t bytes);

    /* Synchronous copies between host memory and device memory; the device is idle. */
    neat_status (*copy_in)(nm_device *dev, void *dst, const void *src, size_t bytes);
    neat_status (*copy_out)(nm_device *dev, void *dst, const void *src, size_t bytes);

    neat_status (*submit)(nm_device *dev, nm_cmdbuf *cb);
    neat_status (*wait)(nm_device *dev, nm_cmdbuf *cb);
    /* Block until the device is idle. Op failures stay with their buffers for wait();
     * return only failures of the device itself. */
    neat_status (*synchronize)(nm_device *dev);
    /* Drop backend state of an idle buffer (a CUDA graph) before its ops change or it is
     * destroyed. May be NULL. */
    void (*cmdbuf_release)(nm_device *dev, nm_cmdbuf *cb);

    nm_op_fn op[NM_OP__COUNT];
} nm_backend_ops;

/* registry.c: the table of a backend kind, or NULL when it was not built. */
const nm_backend_ops *nm_backend_find(neat_backend kind);

#endif
