/*
 * cmdbuf.c — command buffers: a list of validated ops, submitted as a whole.
 *
 * States: recording (ops may be appended) -> committed (sealed; each commit submits the
 * same ops again, which on CUDA becomes a graph launch) -> reset back to recording.
 * Every commit re-checks that each tensor recorded is still alive, so a buffer never runs
 * on memory that was handed back to the pool.
 */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

NEAT_API neat_status neat_cmdbuf_create(neat_device *dh, neat_cmdbuf **out) {
    static const char fn[] = "neat_cmdbuf_create";
    if (!dh) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: dev is NULL", fn);
    nm_device *dev = nm_handle_get(dh, NM_H_DEVICE);
    if (!dev) return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: dev is not a live device (destroyed?)", fn);
    if (!out) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    nm_cmdbuf *cb = calloc(1, sizeof *cb);
    if (!cb) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    cb->dev = dev;
    cb->handle = nm_handle_new(NM_H_CMDBUF, cb);
    if (!cb->handle) {
        free(cb);
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: handle table full", fn);
    }
    pthread_mutex_lock(&dev->lock);
    cb->next = dev->cmdbufs;
    if (dev->cmdbufs) dev->cmdbufs->prev = cb;
    dev->cmdbufs = cb;
    pthread_mutex_unlock(&dev->lock);
    *out = cb->handle;
    return NEAT_OK;
}

/* Drop the backend's state and the scratch memory of an idle buffer. */
static void drop_state(nm_cmdbuf *cb) {
    if (cb->dev->be->cmdbuf_release) cb->dev->be->cmdbuf_release(cb->dev, cb);
    nm_scratch_release(cb);
}

/* Wait, then free everything of the buffer (also used by neat_device_destroy). */
void nm_cmdbuf_release(nm_cmdbuf *cb) {
    nm_device *dev = cb->dev;
    if (cb->commits) dev->be->wait(dev, cb);
    drop_state(cb);
    nm_handle_free(cb->handle);
    pthread_mutex_lock(&dev->lock);
    if (cb->prev) cb->prev->next = cb->next;
    else dev->cmdbufs = cb->next;
    if (cb->next) cb->next->prev = cb->prev;
    pthread_mutex_unlock(&dev->lock);
    free(cb->ops);
    free(cb);
}

NEAT_API void neat_cmdbuf_destroy(neat_cmdbuf *h) {
    nm_cmdbuf *cb = nm_handle_get(h, NM_H_CMDBUF);
    if (cb) nm_cmdbuf_release(cb);
}

static neat_status get_cmdbuf(const char *fn, const neat_cmdbuf *h, nm_cmdbuf **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: cb is NULL", fn);
    *out = nm_handle_get(h, NM_H_CMDBUF);
    if (!*out) return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: cb is not a live command buffer (destroyed?)", fn);
    return NEAT_OK;
}

NEAT_API neat_status neat_cmdbuf_commit(neat_cmdbuf *h) {
    static const char fn[] = "neat_cmdbuf_commit";
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf(fn, h, &cb);
    if (st) return st;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        for (int j = 0; j < op->ntensors; j++)
            if (!nm_handle_get(op->handles[j], NM_H_TENSOR))
                return nm_error(NEAT_ERR_INVALID_HANDLE,
                                "%s: op %lld uses a tensor that was destroyed after recording", fn,
                                (long long)i);
    }
    cb->committed = true;
    if (cb->nops == 0) return NEAT_OK;
    st = cb->dev->be->submit(cb->dev, cb);
    if (st == NEAT_OK) cb->commits++;
    return st;
}

NEAT_API neat_status neat_cmdbuf_wait(neat_cmdbuf *h) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_wait", h, &cb);
    if (st) return st;
    if (cb->commits == 0) return NEAT_OK;
    return cb->dev->be->wait(cb->dev, cb);
}

NEAT_API neat_status neat_cmdbuf_reset(neat_cmdbuf *h) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_reset", h, &cb);
    if (st) return st;
    st = cb->commits ? cb->dev->be->wait(cb->dev, cb) : NEAT_OK;
    drop_state(cb);
    cb->nops = 0;
    cb->committed = false;
    cb->commits = 0;
    __atomic_store_n(&cb->device_ns, 0, __ATOMIC_RELEASE);
    return st;
}

NEAT_API neat_status neat_cmdbuf_op_count(const neat_cmdbuf *h, int64_t *count) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_op_count", h, &cb);
    if (st) return st;
    if (!count) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_op_count: count is NULL");
    *count = cb->nops;
    return NEAT_OK;
}

NEAT_API neat_status neat_cmdbuf_device_time(const neat_cmdbuf *h, double *seconds) {
    static const char fn[] = "neat_cmdbuf_device_time";
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf(fn, h, &cb);
    if (st) return st;
    if (!seconds) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: seconds is NULL", fn);
    int64_t ns = __atomic_load_n(&cb->device_ns, __ATOMIC_ACQUIRE);
    if (ns <= 0)
        return nm_error(NEAT_ERR_INVALID_ARGUMENT,
                        "%s: no submission of this buffer has completed yet (commit, then wait)", fn);
    *seconds = (double)ns * 1e-9;
    return NEAT_OK;
}

/* ---- scratch memory and asynchronous failures -------------------------------------------- */

neat_status nm_scratch_alloc(nm_cmdbuf *cb, size_t bytes, void **ptr) {
    nm_block *blk;
    neat_status st = nm_pool_alloc(cb->dev, bytes, &blk);
    if (st) return st;
    blk->next = cb->scratch;
    cb->scratch = blk;
    *ptr = blk->ptr;
    return NEAT_OK;
}

void nm_scratch_release(nm_cmdbuf *cb) {
    while (cb->scratch) {
        nm_block *blk = cb->scratch;
        cb->scratch = blk->next;
        blk->next = NULL;
        nm_pool_free(cb->dev, blk);
    }
}

void nm_cmdbuf_fail(nm_cmdbuf *cb, neat_status status, const char *msg) {
    if (cb->async_status != NEAT_OK) return;
    cb->async_status = status;
    snprintf(cb->async_msg, sizeof cb->async_msg, "%s", msg ? msg : "");
}
