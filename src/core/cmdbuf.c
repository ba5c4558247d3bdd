/*
 * cmdbuf.c — command buffers: a list of validated ops, submitted as a whole, and the
 * submissions in flight.
 *
 * States: recording (ops may be appended) -> committed (sealed; each commit submits the
 * same ops again, which on CUDA becomes a graph launch) -> reset back to recording.
 *
 * A commit checks, under dev->lock, that every tensor recorded is still alive and takes a
 * reference on each for the submission; nm_reap drops them once the backend reports the
 * submission completed. So a tensor destroyed by another thread right after the commit
 * keeps its memory until the work that uses it is done, and no call waits for the device
 * but wait, reset, synchronize and the host copies. A buffer destroyed while it runs is
 * freed by nm_reap too.
 */
#include "backends/backend.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nm_tensor_unref(nm_tensor *t); /* tensor.c, dev->lock held */

struct nm_submission {
    uint64_t seq;
    nm_cmdbuf *cb;
    int ntensors;
    nm_tensor **tensors; /* one reference each */
    nm_submission *next;
};

NEAT_API neat_status neat_cmdbuf_create(neat_device *dh, neat_cmdbuf **out) {
    static const char fn[] = "neat_cmdbuf_create";
    if (!dh) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: dev is NULL", fn);
    nm_device *dev = nm_handle_get(dh, NM_H_DEVICE);
    if (!dev)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: dev is not a live device (destroyed?)", fn);
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

/* Free an idle buffer whose handle is gone: backend state, scratch, the object.
 * dev->lock held. */
static void cmdbuf_free(nm_cmdbuf *cb) {
    nm_device *dev = cb->dev;
    if (dev->be->cmdbuf_release) dev->be->cmdbuf_release(dev, cb);
    nm_scratch_release(cb);
    if (cb->prev)
        cb->prev->next = cb->next;
    else
        dev->cmdbufs = cb->next;
    if (cb->next) cb->next->prev = cb->prev;
    for (int64_t i = 0; i < cb->nops; i++) nm_op_free_list(&cb->ops[i]);
    free(cb->ops);
    free(cb);
}

/* No submission of cb is left in the in-flight list (all reaped). dev->lock held. */
static int cmdbuf_idle(const nm_cmdbuf *cb) { return cb->last_seq <= cb->dev->reaped_seq; }

void nm_reap(nm_device *dev) {
    uint64_t done = dev->be->completed(dev);
    pthread_mutex_lock(&dev->lock);
    while (dev->inflight && dev->inflight->seq <= done) {
        nm_submission *s = dev->inflight;
        dev->inflight = s->next;
        if (!dev->inflight) dev->inflight_tail = NULL;
        for (int i = 0; i < s->ntensors; i++) nm_tensor_unref(s->tensors[i]);
        nm_cmdbuf *cb = s->cb;
        dev->reaped_seq = s->seq;
        free(s->tensors);
        free(s);
        /* Freed with its last submission: an earlier one of the same buffer may be reaped in
         * this loop while a later one still names it. */
        if (!cb->handle && cmdbuf_idle(cb)) cmdbuf_free(cb);
    }
    pthread_mutex_unlock(&dev->lock);
}

/* Wait for every submission of the device, then free every buffer (device destroy). */
void nm_cmdbuf_release_all(nm_device *dev) {
    dev->be->wait_seq(dev, dev->next_seq);
    nm_reap(dev);
    pthread_mutex_lock(&dev->lock);
    while (dev->cmdbufs) {
        nm_cmdbuf *cb = dev->cmdbufs;
        if (cb->handle) nm_handle_free(cb->handle);
        cb->handle = NULL;
        cmdbuf_free(cb);
    }
    pthread_mutex_unlock(&dev->lock);
}

/* Destroy never waits: a buffer still running is freed by nm_reap when it completes. */
NEAT_API void neat_cmdbuf_destroy(neat_cmdbuf *h) {
    nm_cmdbuf *cb = nm_handle_get(h, NM_H_CMDBUF);
    if (!cb) return;
    nm_device *dev = cb->dev;
    nm_reap(dev);
    pthread_mutex_lock(&dev->lock);
    if (cb->handle == h) { /* a racing destroy of the same handle frees it once */
        nm_handle_free(h);
        cb->handle = NULL;
        if (cmdbuf_idle(cb)) cmdbuf_free(cb);
    }
    pthread_mutex_unlock(&dev->lock);
}

static neat_status get_cmdbuf(const char *fn, const neat_cmdbuf *h, nm_cmdbuf **out) {
    if (!h) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "%s: cb is NULL", fn);
    *out = nm_handle_get(h, NM_H_CMDBUF);
    if (!*out)
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: cb is not a live command buffer (destroyed?)",
                        fn);
    return NEAT_OK;
}

/* A submission of cb with room for every tensor its ops name. */
static nm_submission *new_submission(nm_cmdbuf *cb, uint64_t seq) {
    nm_submission *s = calloc(1, sizeof *s);
    int cap = 0;
    for (int64_t i = 0; i < cb->nops; i++) cap += cb->ops[i].ntensors + cb->ops[i].nlist;
    if (s) s->tensors = malloc((size_t)(cap ? cap : 1) * sizeof *s->tensors);
    if (s && !s->tensors) {
        free(s);
        return NULL;
    }
    if (s) s->seq = seq, s->cb = cb;
    return s;
}

/* One reference on each distinct tensor of cb's ops, kept by s. dev->lock held (since the
 * handles were checked, so none of them was freed). */
static void hold_list(nm_tensor *const *ts, int n, nm_submission *s) {
    for (int j = 0; j < n; j++) {
        nm_tensor *t = ts[j];
        if (!t || t->mark == s->seq) continue;
        t->mark = s->seq;
        t->refs++;
        t->storage->last_use = s->seq;
        s->tensors[s->ntensors++] = t;
    }
}

static void hold_tensors(nm_cmdbuf *cb, nm_submission *s) {
    for (int64_t i = 0; i < cb->nops; i++) {
        int n;
        nm_tensor *const *ts = nm_op_tensors(&cb->ops[i], &n);
        hold_list(ts, n, s);
        ts = nm_op_list(&cb->ops[i], &n);
        hold_list(ts, n, s);
    }
}

/* The op's tensors (slots and list) and comm are all alive. dev->lock held. */
static int op_alive(const nm_op *op) {
    for (int j = 0; j < op->ntensors; j++)
        if (!nm_handle_get(op->handles[j], NM_H_TENSOR)) return 0;
    for (int j = 0; j < op->nlist; j++)
        if (!nm_handle_get(op->list_handles[j], NM_H_TENSOR)) return 0;
    return !op->comm || nm_handle_get(op->comm, NM_H_COMM) != NULL;
}

/* A comm the op uses that a timeout or a peer's failure broke (its peers are gone or out of
 * step: replaying would wait on them again). */
static int op_comm_broken(const nm_op *op) {
    nm_comm *c = op->comm ? nm_handle_get(op->comm, NM_H_COMM) : NULL;
    return c && __atomic_load_n(&c->broken, __ATOMIC_RELAXED);
}

NEAT_API neat_status neat_cmdbuf_commit(neat_cmdbuf *h) {
    static const char fn[] = "neat_cmdbuf_commit";
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf(fn, h, &cb);
    if (st) return st;
    nm_device *dev = cb->dev;
    nm_reap(dev);
    pthread_mutex_lock(&dev->lock);
    if (cb->handle != h) {
        pthread_mutex_unlock(&dev->lock);
        return nm_error(NEAT_ERR_INVALID_HANDLE, "%s: cb was destroyed", fn);
    }
    for (int64_t i = 0; i < cb->nops && st == NEAT_OK; i++) {
        const nm_op *op = &cb->ops[i];
        if (!op_alive(op))
            st = nm_error(NEAT_ERR_INVALID_HANDLE,
                          "%s: op %lld (%s) uses a %s that was destroyed after recording", fn,
                          (long long)i, op->fn,
                          op->comm && !nm_handle_get(op->comm, NM_H_COMM) ? "comm" : "tensor");
        else if (op_comm_broken(op))
            st = nm_error(
                NEAT_ERR_BACKEND_ERROR,
                "%s: op %lld (%s) uses a comm broken by an earlier timeout or peer failure: "
                "destroy it and create a new one",
                fn, (long long)i, op->fn);
    }
    if (st == NEAT_OK) cb->committed = true;
    if (st == NEAT_OK && cb->nops > 0) {
        /* The references are taken after submit succeeds: nothing can release a tensor
         * meanwhile (dev->lock is held), and a failed submit leaves nothing to undo. */
        uint64_t seq = dev->next_seq + 1;
        nm_submission *s = new_submission(cb, seq);
        if (!s) st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        if (st == NEAT_OK) st = dev->be->submit(dev, cb, seq);
        if (st == NEAT_OK) {
            hold_tensors(cb, s);
            dev->next_seq = seq;
            cb->last_seq = seq;
            cb->commits++;
            if (dev->inflight_tail)
                dev->inflight_tail->next = s;
            else
                dev->inflight = s;
            dev->inflight_tail = s;
        } else if (s) {
            free(s->tensors);
            free(s);
        }
    }
    pthread_mutex_unlock(&dev->lock);
    return st;
}

/* Wait for cb's submissions, then hand over (and clear) the first failure among them. */
static neat_status wait_cmdbuf(nm_cmdbuf *cb) {
    nm_device *dev = cb->dev;
    pthread_mutex_lock(&dev->lock);
    uint64_t seq = cb->last_seq;
    pthread_mutex_unlock(&dev->lock);
    neat_status st = seq ? dev->be->wait_seq(dev, seq) : NEAT_OK;
    nm_reap(dev);
    pthread_mutex_lock(&dev->lock);
    if (cb->async_status != NEAT_OK) {
        st = cb->async_status;
        nm_set_error_text(cb->async_msg);
        cb->async_status = NEAT_OK;
        cb->async_msg[0] = 0;
    }
    pthread_mutex_unlock(&dev->lock);
    return st;
}

NEAT_API neat_status neat_cmdbuf_wait(neat_cmdbuf *h) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_wait", h, &cb);
    if (st) return st;
    st = wait_cmdbuf(cb);
    if (st == NEAT_OK) st = nm_pool_check(cb->dev, "neat_cmdbuf_wait");
    return st;
}

NEAT_API neat_status neat_cmdbuf_reset(neat_cmdbuf *h) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_reset", h, &cb);
    if (st) return st;
    nm_device *dev = cb->dev;
    /* Wait until no submission of cb is in flight, under the lock that commit takes: a
     * commit from another thread between the wait and the lock is waited for too. */
    neat_status failed = NEAT_OK;
    for (;;) {
        st = wait_cmdbuf(cb);
        if (st != NEAT_OK && failed == NEAT_OK) failed = st;
        pthread_mutex_lock(&dev->lock);
        if (cmdbuf_idle(cb)) break;
        pthread_mutex_unlock(&dev->lock);
    }
    st = failed;
    if (dev->be->cmdbuf_release) dev->be->cmdbuf_release(dev, cb);
    nm_scratch_release(cb);
    for (int64_t i = 0; i < cb->nops; i++) nm_op_free_list(&cb->ops[i]);
    cb->nops = 0;
    cb->committed = false;
    cb->commits = 0;
    __atomic_store_n(&cb->device_ns, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&dev->lock);
    return st;
}

NEAT_API neat_status neat_cmdbuf_op_count(const neat_cmdbuf *h, int64_t *count) {
    nm_cmdbuf *cb;
    neat_status st = get_cmdbuf("neat_cmdbuf_op_count", h, &cb);
    if (st) return st;
    if (!count) return nm_error(NEAT_ERR_INVALID_ARGUMENT, "neat_cmdbuf_op_count: count is NULL");
    pthread_mutex_lock(&cb->dev->lock);
    *count = cb->nops;
    pthread_mutex_unlock(&cb->dev->lock);
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
                        "%s: no submission of this buffer has completed yet (commit, then wait)",
                        fn);
    *seconds = (double)ns * 1e-9;
    return NEAT_OK;
}

/* The first failure of any buffer of the device not yet reported by a wait: handed over
 * and cleared (neat_device_synchronize). */
neat_status nm_cmdbuf_take_failure(nm_device *dev) {
    neat_status st = NEAT_OK;
    pthread_mutex_lock(&dev->lock);
    nm_cmdbuf *first = NULL;
    for (nm_cmdbuf *cb = dev->cmdbufs; cb; cb = cb->next)
        if (cb->handle && cb->async_status != NEAT_OK && (!first || cb->last_seq < first->last_seq))
            first = cb;
    if (first) {
        st = first->async_status;
        nm_set_error_text(first->async_msg);
        first->async_status = NEAT_OK;
        first->async_msg[0] = 0;
    }
    pthread_mutex_unlock(&dev->lock);
    return st;
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

void nm_cmdbuf_fail_all(nm_cmdbuf *cb, neat_status status, const char *msg) {
    pthread_mutex_lock(&cb->dev->lock);
    if (cb->async_status == NEAT_OK) {
        cb->async_status = status;
        snprintf(cb->async_msg, sizeof cb->async_msg, "%s", msg ? msg : "");
    }
    pthread_mutex_unlock(&cb->dev->lock);
}

void nm_cmdbuf_fail(nm_cmdbuf *cb, int64_t index, neat_status status, const char *detail) {
    char msg[NM_MSG_MAX];
    const char *fn = index >= 0 && index < cb->nops ? cb->ops[index].fn : "neat_cmdbuf_commit";
    /* A detail that starts with the op's own name is not repeated. */
    size_t n = strlen(fn);
    if (detail && !strncmp(detail, fn, n) && detail[n] == ':')
        detail += n + 1 + (detail[n + 1] == ' ');
    snprintf(msg, sizeof msg, "%s (op %lld of %lld in the command buffer): %s", fn,
             (long long)index, (long long)cb->nops, detail ? detail : "failed");
    nm_cmdbuf_fail_all(cb, status, msg);
}
