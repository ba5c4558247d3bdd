/*
 * copy.c — the recorded host copies on CUDA, through pinned staging buffers so that they
 * run asynchronously and inside a captured graph.
 *
 * From host: at commit, cuda_stage_host_copies waits until the previous submission's
 * device copy has read the op's staging buffer (an event recorded right after that copy,
 * early in the previous step: normally long done), then copies src into it; the op copies
 * staging -> tensor on the stream. To host: a kernel writes the tensor into mapped staging
 * (a kernel, not a memcpy node, so that it may follow a guard inside a graph: guard.cu);
 * when the submission completes (backend.c, complete_subs), cuda_finish_host_copies copies
 * staging -> dst for the copies placed before the op that failed, if one did.
 * Staging blocks are mapped pinned memory (cudaHostAlloc). A released buffer's blocks go to
 * the device's list of spare blocks (d->pinned, at most CUDA_PINNED_BLOCKS) and a later
 * buffer takes one of at least its size and at most twice it: cudaFreeHost waits for the
 * whole device, which neat_cmdbuf_destroy must not do. A block that finds the list full is
 * freed after all (that destroy waits); the list is freed when the device closes.
 *
 * Copies that run ahead: a copy_from_host that no op can fail before (so no guard would
 * skip it) and whose destination no earlier op of the buffer touches is not enqueued with
 * the buffer's ops (nor captured in its graph) but issued at each commit on the device's
 * upload_stream, so that the next step's batch travels while the current step computes.
 * Ordering (cuda_upload_ahead), for a copy into tensor t of submission S:
 *   - before the copy: every earlier submission that used t's memory. The core keeps the
 *     latest one in t->storage->last_use (S's own references are taken after submit), and
 *     the main stream runs submissions in seq order, so waiting for that one's `done`
 *     event orders the copy after all of them: after their reads and writes of t on the
 *     main stream, and after their own copies ahead (each submission's main stream waits
 *     for those before its `done`). upload_stream is in order too: d->upload_after keeps
 *     the latest `done` it already waits for, and an older one needs no new wait.
 *   - after the copy: S's ops, since the main stream waits (before S's `start`) for the
 *     `consumed` event of S's last copy ahead, recorded behind all of S's copies on
 *     upload_stream. Every later submission and every host access to t (tensor read,
 *     write, destroy wait for S's `done`) comes after S's ops.
 *   - the staging: the host refills it at the next commit only after its `consumed`.
 * Nothing in between can touch t: within S only ops after the copy do (the rule above),
 * and outside S only submissions that are ordered against S as above. neat_tensor_write
 * and read keep copy_stream: a synchronous copy never queues behind a copy that waits.
 */
#include "common.h"

#include <stdlib.h>
#include <string.h>

static int is_host_copy(const nm_op *op) {
    return op->kind == NM_OP_COPY_FROM_HOST || op->kind == NM_OP_COPY_TO_HOST;
}

static size_t copy_bytes(const nm_op *op) {
    const nm_tensor *t =
        op->kind == NM_OP_COPY_FROM_HOST ? op->u.copy_from_host.t : op->u.copy_to_host.t;
    return (size_t)t->numel * sizeof(float);
}

/* Some op of cb before op `before` names (reads or writes) memory of t's storage. */
static int used_before(nm_cmdbuf *cb, int64_t before, const nm_tensor *t) {
    for (int64_t j = 0; j < before; j++) {
        int n, nl;
        nm_tensor *const *ts = nm_op_tensors(&cb->ops[j], &n);
        nm_tensor *const *list = nm_op_list(&cb->ops[j], &nl);
        for (int k = 0; k < n + nl; k++) {
            const nm_tensor *u = k < n ? ts[k] : list[k - n];
            if (u && u->storage == t->storage) return 1;
        }
    }
    return 0;
}

/* A spare staging block of bytes..2*bytes from d's list, else a new one. */
static neat_status pinned_get(cuda_device *d, size_t bytes, void **ptr, const char *fn) {
    pthread_mutex_lock(&d->pinned_lock);
    int best = -1;
    for (int i = 0; i < d->npinned; i++)
        if (d->pinned[i].bytes >= bytes && d->pinned[i].bytes / 2 <= bytes &&
            (best < 0 || d->pinned[i].bytes < d->pinned[best].bytes))
            best = i;
    if (best >= 0) {
        *ptr = d->pinned[best].ptr;
        d->pinned[best] = d->pinned[--d->npinned];
    }
    pthread_mutex_unlock(&d->pinned_lock);
    if (best >= 0) return NEAT_OK;
    return cuda_check(cudaHostAlloc(ptr, bytes, cudaHostAllocMapped), fn,
                      "cudaHostAlloc (staging)");
}

/* Back to d's list (nothing uses it any more), or freed when the list is full. */
static void pinned_put(cuda_device *d, void *ptr, size_t bytes) {
    pthread_mutex_lock(&d->pinned_lock);
    int kept = d->npinned < CUDA_PINNED_BLOCKS;
    if (kept) d->pinned[d->npinned++] = (struct cuda_pinned){ptr, bytes};
    pthread_mutex_unlock(&d->pinned_lock);
    if (!kept) cudaFreeHost(ptr);
}

void cuda_pinned_free_all(cuda_device *d) {
    for (int i = 0; i < d->npinned; i++) cudaFreeHost(d->pinned[i].ptr);
    d->npinned = 0;
}

/* c->ahead: the copies from host that run ahead (see the top of the file). */
static neat_status mark_ahead(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    c->last_ahead = -1;
    if (!c->host) return NEAT_OK;
    c->ahead = calloc((size_t)cb->nops, 1);
    if (!c->ahead)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "neat_cmdbuf_commit: out of host memory");
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (nm_op_flags(op->kind) & NM_OPF_RUNTIME_CHECK) break; /* later ops may be guarded */
        if (op->kind != NM_OP_COPY_FROM_HOST || !c->host[i]) continue;
        if (used_before(cb, i, op->u.copy_from_host.t)) continue;
        c->ahead[i] = 1;
        c->last_ahead = i;
        c->nahead++;
    }
    return NEAT_OK;
}

neat_status cuda_host_copies_init(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    static const char fn[] = "neat_cmdbuf_commit";
    c->last_ahead = -1;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (!is_host_copy(op) || copy_bytes(op) == 0) continue;
        if (!c->host) {
            c->host = calloc((size_t)cb->nops, sizeof *c->host);
            c->host_dev = calloc((size_t)cb->nops, sizeof *c->host_dev);
            c->consumed = calloc((size_t)cb->nops, sizeof *c->consumed);
            if (!c->host || !c->host_dev || !c->consumed)
                return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        }
        neat_status st = pinned_get(cuda_dev(cb->dev), copy_bytes(op), &c->host[i], op->fn);
        if (!st)
            st = cuda_check(cudaHostGetDevicePointer(&c->host_dev[i], c->host[i], 0), op->fn,
                            "cudaHostGetDevicePointer");
        if (!st && op->kind == NM_OP_COPY_FROM_HOST)
            st = cuda_check(cudaEventCreateWithFlags(&c->consumed[i], cudaEventDisableTiming),
                            op->fn, "cudaEventCreate");
        if (st) return st;
        c->copies_out |= op->kind == NM_OP_COPY_TO_HOST;
    }
    return mark_ahead(cb, c);
}

void cuda_host_copies_free(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    if (!c->host) return;
    for (int64_t i = 0; i < cb->nops; i++) {
        if (c->host[i]) pinned_put(cuda_dev(cb->dev), c->host[i], copy_bytes(&cb->ops[i]));
        if (c->consumed[i]) cudaEventDestroy(c->consumed[i]);
    }
    free(c->host);
    free(c->host_dev);
    free(c->consumed);
    free(c->ahead);
    c->ahead = NULL;
    c->last_ahead = -1;
    c->nahead = 0;
    c->host = NULL;
    c->host_dev = NULL;
    c->consumed = NULL;
}

neat_status cuda_stage_host_copies(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    if (!c->host) return NEAT_OK;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        if (op->kind != NM_OP_COPY_FROM_HOST || !c->host[i]) continue;
        neat_status st =
            cuda_check(cudaEventSynchronize(c->consumed[i]), op->fn, "cudaEventSynchronize");
        if (st) return st;
        memcpy(c->host[i], op->u.copy_from_host.src, copy_bytes(op));
    }
    return NEAT_OK;
}

neat_status cuda_upload_ahead(nm_device *dev, nm_cmdbuf *cb, int *issued) {
    cuda_device *d = cuda_dev(dev);
    cuda_cmdbuf *c = cuda_cb(cb);
    *issued = 0;
    if (c->last_ahead < 0) return NEAT_OK;
    cudaStream_t up = d->upload_stream;
    for (int64_t i = 0; i <= c->last_ahead; i++) {
        if (!c->ahead[i]) continue;
        const nm_op *op = &cb->ops[i];
        nm_tensor *t = op->u.copy_from_host.t;
        uint64_t after = t->storage->last_use;
        neat_status st = NEAT_OK;
        if (after > d->upload_after) {
            cudaEvent_t done = cuda_sub_done(d, after);
            if (done)
                st = cuda_check(cudaStreamWaitEvent(up, done, 0), op->fn, "cudaStreamWaitEvent");
            if (!st) d->upload_after = after;
        }
        if (!st)
            st = cuda_check(
                cudaMemcpyAsync(t->data, c->host[i], copy_bytes(op), cudaMemcpyHostToDevice, up),
                op->fn, "cudaMemcpyAsync");
        if (!st) *issued = 1;
        if (!st) st = cuda_check(cudaEventRecord(c->consumed[i], up), op->fn, "cudaEventRecord");
        if (st) return st;
    }
    return cuda_check(cudaStreamWaitEvent(d->main_stream, c->consumed[c->last_ahead], 0),
                      "neat_cmdbuf_commit", "cudaStreamWaitEvent");
}

void cuda_finish_host_copies(nm_cmdbuf *cb, int64_t until) {
    cuda_cmdbuf *c = cuda_cb(cb);
    if (!c || !c->copies_out) return;
    for (int64_t i = 0; i < cb->nops && i < until; i++) {
        const nm_op *op = &cb->ops[i];
        if (op->kind == NM_OP_COPY_TO_HOST && c->host[i])
            memcpy(op->u.copy_to_host.dst, c->host[i], copy_bytes(op));
    }
}

neat_status cuda_copy_from_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    size_t bytes = copy_bytes(op);
    if (bytes == 0) return NEAT_OK;
    cuda_cmdbuf *c = cuda_cb(cb);
    int64_t i = op - cb->ops;
    cudaStream_t s = cuda_dev(dev)->stream;
    neat_status st = cuda_check(
        cudaMemcpyAsync(op->u.copy_from_host.t->data, c->host[i], bytes, cudaMemcpyHostToDevice, s),
        op->fn, "cudaMemcpyAsync");
    /* In a capture the record must be external to become an event-record node that the
     * host can wait on after a graph launch (a plain one only orders the capture); outside
     * a capture the external flag is refused. */
    enum cudaStreamCaptureStatus cap = cudaStreamCaptureStatusNone;
    if (!st) st = cuda_check(cudaStreamIsCapturing(s, &cap), op->fn, "cudaStreamIsCapturing");
    if (!st)
        st = cuda_check(cudaEventRecordWithFlags(c->consumed[i], s,
                                                 cap == cudaStreamCaptureStatusActive
                                                     ? cudaEventRecordExternal
                                                     : cudaEventRecordDefault),
                        op->fn, "cudaEventRecordWithFlags");
    return st;
}

/* This copy and the copies to host right after it (up to CUDA_COPY_LIST) in one kernel: a
 * training step ends with several (the loss, the logits), and each kernel node costs the
 * step a launch. Nothing between them can fail or be guarded (a copy to host checks the
 * record itself: backend.c), so one launch is the same as several; enqueue_ops skips the
 * ops taken here (c->copied_until). */
neat_status cuda_copy_to_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    cuda_cmdbuf *c = cuda_cb(cb);
    const float *x[CUDA_COPY_LIST];
    float *y[CUDA_COPY_LIST];
    int64_t n[CUDA_COPY_LIST], i = op - cb->ops, j = i;
    int count = 0;
    for (; j < cb->nops && count < CUDA_COPY_LIST; j++) {
        const nm_op *o = &cb->ops[j];
        if (o->kind != NM_OP_COPY_TO_HOST) break;
        if (copy_bytes(o) == 0) continue;
        x[count] = o->u.copy_to_host.t->data;
        y[count] = (float *)c->host_dev[j];
        n[count++] = o->u.copy_to_host.t->numel;
    }
    c->copied_until = j;
    return cuda_copy_f32_list(dev, count, x, y, n, op->fn);
}
