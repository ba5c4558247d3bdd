/*
 * backend.c — the CUDA backend's table: device, memory, copies, and command-buffer
 * execution on the device's stream.
 *
 * submit(): the first submission of a buffer enqueues its ops one by one on the stream
 * (descriptors, algorithms and scratch memory are made then); the second captures the same
 * ops into a CUDA graph (stream capture, nothing allocated or searched during it) and
 * launches it; every later submission is one graph launch. A buffer whose capture fails
 * keeps being enqueued op by op (NEATML_CUDA_GRAPHS changes when capture happens).
 * Copies from host that no op can fail before and no earlier op touches run ahead on the
 * upload stream, outside the graph, so that a step's batch travels while the previous step
 * computes (copy.c: which ones, and the ordering argument).
 * An event recorded after each submission is what wait() blocks on; wait() then reads the
 * submission's own copy of the buffer's error record (an out-of-range label, an invalid
 * hyper), taken and cleared on the stream at the end of the submission (guard.cu), when the
 * buffer has ops that can set it: a replay queued behind a failed run starts clear.
 * Threads: the backend has none of its own. Every entry runs on the application's thread
 * and leaves that thread's current device as it found it (current_device.c).
 */
#include "common.h"
#include "../half_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status mapping ------------------------------------------------------------------------ */

neat_status cuda_check(cudaError_t e, const char *what, const char *call) {
    if (e == cudaSuccess) return NEAT_OK;
    cudaGetLastError(); /* clear a non-sticky error so that it is not reported twice */
    return nm_error(
        e == cudaErrorMemoryAllocation ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR,
        "%s: %s failed: %s (%s)", what, call, cudaGetErrorString(e), cudaGetErrorName(e));
}

neat_status cublas_check(cublasStatus_t s, const char *what, const char *call) {
    if (s == CUBLAS_STATUS_SUCCESS) return NEAT_OK;
    return nm_error(
        s == CUBLAS_STATUS_ALLOC_FAILED ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR,
        "%s: %s failed: %s (%s)", what, call, cublasLtGetStatusString(s), cublasLtGetStatusName(s));
}

neat_status cudnn_check(cudnnStatus_t s, const char *what, const char *call) {
    if (s == CUDNN_STATUS_SUCCESS) return NEAT_OK;
    return nm_error(s == CUDNN_STATUS_ALLOC_FAILED ? NEAT_ERR_OUT_OF_MEMORY
                                                   : NEAT_ERR_BACKEND_ERROR,
                    "%s: %s failed: %s", what, call, cudnnGetErrorString(s));
}

/* ---- scratch --------------------------------------------------------------------------------- */

neat_status cuda_scratch(nm_cmdbuf *cb, int slot, size_t bytes, void **ptr) {
    cuda_cmdbuf *c = cuda_cb(cb);
    cuda_slot *s = &c->slots[c->cur_op * CUDA_SLOTS + slot];
    if (bytes == 0 || (s->ptr && s->bytes >= bytes)) {
        *ptr = s->ptr;
        return NEAT_OK;
    }
    /* The first submission sizes each slot; a larger request replaces the block (the old one
     * stays held by the buffer until release, so work in flight never loses it). */
    void *p;
    neat_status st = nm_scratch_alloc(cb, bytes, &p);
    if (st) return st;
    s->ptr = p;
    s->bytes = bytes;
    *ptr = p;
    return NEAT_OK;
}

neat_status cuda_scratch_zeroed(nm_device *dev, nm_cmdbuf *cb, int slot, size_t bytes, void **ptr) {
    cuda_cmdbuf *c = cuda_cb(cb);
    void *old = c->slots[c->cur_op * CUDA_SLOTS + slot].ptr;
    neat_status st = cuda_scratch(cb, slot, bytes, ptr);
    if (st || *ptr == old) return st;
    return cuda_check(cudaMemsetAsync(*ptr, 0, bytes, cuda_dev(dev)->stream), "neat_cmdbuf_commit",
                      "cudaMemsetAsync");
}

/* ---- device ---------------------------------------------------------------------------------- */

static void release_device(cuda_device *d) {
    cuda_matmul_cache_free(d);
    cuda_conv_cache_free(d);
    if (d->dnn) cudnnDestroy(d->dnn);
    if (d->lt) cublasLtDestroy(d->lt);
    if (d->lt_ws) cudaFree(d->lt_ws);
    if (d->main_stream) cudaStreamDestroy(d->main_stream);
    if (d->copy_stream) cudaStreamDestroy(d->copy_stream);
    if (d->upload_stream) cudaStreamDestroy(d->upload_stream);
    for (int i = 0; i < CUDA_MAX_GUARDS; i++)
        if (d->guard_streams[i]) cudaStreamDestroy(d->guard_streams[i]);
    for (int i = 0; i < d->nspare; i++) cudaEventDestroy(d->spare[i]);
    for (int i = 0; i < d->nspare_records; i++) cudaFreeHost(d->spare_records[i]);
    for (int i = 0; i < d->nsubs; i++) {
        cudaEventDestroy(d->subs[(d->first + i) % d->capsubs].start);
        cudaEventDestroy(d->subs[(d->first + i) % d->capsubs].done);
        if (d->subs[(d->first + i) % d->capsubs].record)
            cudaFreeHost(d->subs[(d->first + i) % d->capsubs].record);
    }
    free(d->subs);
    cuda_pinned_free_all(d);
    pthread_mutex_destroy(&d->pinned_lock);
    pthread_mutex_destroy(&d->lock);
    pthread_mutex_destroy(&d->reap_lock);
    free(d);
}

/* Submissions of a buffer before the one that captures its graph: 1 by default;
 * NEATML_CUDA_GRAPHS=0 never captures, =1 captures at the first commit and reports a failed
 * capture as the commit's error (tests use it to run every op through a graph). */
static uint64_t graph_after(void) {
    const char *env = getenv("NEATML_CUDA_GRAPHS");
    if (env && strcmp(env, "0") == 0) return UINT64_MAX;
    if (env && strcmp(env, "1") == 0) return 0;
    return 1;
}

static neat_status cuda_device_open(nm_device *dev, int index) {
    static const char fn[] = "neat_device_create";
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no CUDA device: %s", fn, cudaGetErrorString(e));
    }
    if (count == 0) return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no CUDA device: none found", fn);
    if (index >= count)
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no CUDA device %d: %d present", fn, index,
                        count);
    cuda_device *d = calloc(1, sizeof *d);
    if (!d) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    d->index = index;
    pthread_mutex_init(&d->lock, NULL);
    pthread_mutex_init(&d->reap_lock, NULL);
    pthread_mutex_init(&d->pinned_lock, NULL);
    struct cudaDeviceProp prop;
    int prev;
    /* the streams and the cuBLASLt and cuDNN handles belong to the device current now */
    neat_status st = cuda_enter(index, fn, &prev);
    if (!st) st = cuda_check(cudaGetDeviceProperties(&prop, index), fn, "cudaGetDeviceProperties");
    if (!st)
        st = cuda_check(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), fn,
                        "cudaStreamCreateWithFlags");
    d->main_stream = d->stream;
    if (!st)
        st = cuda_check(cudaStreamCreateWithFlags(&d->copy_stream, cudaStreamNonBlocking), fn,
                        "cudaStreamCreateWithFlags");
    if (!st)
        st = cuda_check(cudaStreamCreateWithFlags(&d->upload_stream, cudaStreamNonBlocking), fn,
                        "cudaStreamCreateWithFlags");
    if (!st) st = cublas_check(cublasLtCreate(&d->lt), fn, "cublasLtCreate");
    if (!st) st = cudnn_check(cudnnCreate(&d->dnn), fn, "cudnnCreate");
    if (!st) st = cudnn_check(cudnnSetStream(d->dnn, d->stream), fn, "cudnnSetStream");
    if (!st)
        st = cuda_check(cudaMalloc(&d->lt_ws, CUDA_LT_WORKSPACE), fn,
                        "cudaMalloc(cuBLASLt workspace)");
    if (st) {
        release_device(d);
        cuda_leave(prev);
        return st;
    }
    d->sms = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    const char *pdl = getenv("NEATML_CUDA_PDL");
    d->pdl = prop.major >= 9 && !(pdl && strcmp(pdl, "0") == 0);
    const char *small = getenv("NEATML_CONV_SMALL");
    d->conv_small = !(small && strcmp(small, "0") == 0);
    d->total_memory = prop.totalGlobalMem;
    dev->impl = d;
    snprintf(dev->props.name, sizeof dev->props.name, "%.127s", prop.name);
    dev->props.total_memory = (int64_t)prop.totalGlobalMem;
    dev->props.num_threads = d->sms;
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess)
        dev->mem_available = (int64_t)free_bytes;
    else
        cudaGetLastError();
    cuda_leave(prev);
    return NEAT_OK;
}

static void cuda_device_close(nm_device *dev) {
    cuda_device *d = cuda_dev(dev);
    if (!d) return;
    int prev;
    /* Nothing to report to: even on a failed cudaSetDevice the objects are released (their
     * calls then fail on their own). */
    cuda_enter(d->index, "neat_device_destroy", &prev);
    cudaStreamSynchronize(d->stream);
    cudaStreamSynchronize(d->upload_stream);
    release_device(d);
    dev->impl = NULL;
    cuda_leave(prev);
}

static neat_status cuda_mem_alloc(nm_device *dev, size_t bytes, void **ptr) {
    *ptr = NULL;
    if (bytes == 0) return NEAT_OK;
    cuda_device *d = cuda_dev(dev);
    /* More than the card has cannot succeed: answer without a driver call. */
    if (bytes > d->total_memory)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "cudaMalloc of %zu bytes: the GPU has %zu", bytes,
                        d->total_memory);
    static const char what[] = "neat (device memory pool)";
    int prev;
    neat_status st = cuda_enter(d->index, what, &prev);
    if (!st) st = cuda_check(cudaMalloc(ptr, bytes), what, "cudaMalloc");
    if (st) *ptr = NULL;
    cuda_leave(prev);
    return st;
}

static void cuda_mem_free(nm_device *dev, void *ptr, size_t bytes) {
    if (!ptr) return;
    int prev;
    cuda_enter(cuda_dev(dev)->index, "neat (device memory pool)", &prev); /* nothing to report to */
    cudaFree(ptr);
    cuda_leave(prev);
}

/* On a stream of their own, waited for: not behind unrelated work of the device's stream
 * (the core has already waited for the work that uses this memory), and complete when the
 * call returns. (cudaMemcpy would not do: from pageable memory it may return before the
 * data has landed, and the device's non-blocking stream would not wait for it.) */
static neat_status copy(nm_device *dev, void *dst, const void *src, size_t bytes,
                        enum cudaMemcpyKind kind, const char *what) {
    if (bytes == 0) return NEAT_OK;
    cuda_device *d = cuda_dev(dev);
    int prev;
    neat_status st = cuda_enter(d->index, what, &prev);
    if (st) return st;
    st =
        cuda_check(cudaMemcpyAsync(dst, src, bytes, kind, d->copy_stream), what, "cudaMemcpyAsync");
    neat_status done =
        cuda_check(cudaStreamSynchronize(d->copy_stream), what, "cudaStreamSynchronize");
    cuda_leave(prev);
    return st ? st : done;
}

static neat_status cuda_copy_in(nm_device *dev, void *dst, const void *src, size_t bytes) {
    return copy(dev, dst, src, bytes, cudaMemcpyHostToDevice, "neat_tensor_write");
}

static neat_status cuda_copy_out(nm_device *dev, void *dst, const void *src, size_t bytes) {
    return copy(dev, dst, src, bytes, cudaMemcpyDeviceToHost, "neat_tensor_read");
}

/* ---- command buffers ------------------------------------------------------------------------- */

/* Ops that need no guard after a failed op: those that check the error record themselves
 * (every op that can fail), and the copy to host (its result reaches dst only when the
 * submission succeeded: copy.c). */
static int checks_record(const nm_op *op) {
    return (nm_op_flags(op->kind) & NM_OPF_RUNTIME_CHECK) || op->kind == NM_OP_COPY_TO_HOST;
}

/* Enqueue (or capture) the ops in order; after an op that can fail, the first op that
 * does not check the error record itself is guarded (guard.cu). Collectives are the
 * exception: they run even after a failure, so that the other ranks are not left waiting
 * for this one (their result then means nothing; the failure is reported at wait). In a
 * capture a collective goes outside the guards' bodies (NCCL's work may not sit in a
 * conditional body), and the ops after it are guarded afresh; eagerly, after a failure only
 * the collectives are still enqueued. */
static neat_status enqueue_ops(nm_device *dev, nm_cmdbuf *cb, int capturing) {
    cuda_cmdbuf *c = cuda_cb(cb);
    int unguarded = 0, checked = 0, stopped = 0;
    c->copied_until = 0;
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        int collective = (nm_op_flags(op->kind) & NM_OPF_COLLECTIVE) != 0;
        neat_status st = NEAT_OK;
        c->cur_op = i;
        if (c->ahead && c->ahead[i]) continue; /* issued on upload_stream at each commit */
        if (i < c->copied_until) continue;     /* enqueued with the copy before it (copy.c) */
        if (collective) {
            if (capturing && cuda_dev(dev)->guard_depth) st = cuda_guards_close(dev);
            unguarded = checked; /* what follows is guarded again */
        } else if (stopped) {
            continue;
        } else if (unguarded && !checks_record(op)) {
            int stop;
            st = cuda_guard(dev, cb, capturing, &stop);
            if (!st && stop) {
                stopped = 1;
                continue;
            }
            unguarded = 0;
        }
        if (!st) st = cuda_run_op(dev, cb, op); /* half.cu: half tensors natively or not */
        if (st) /* named as a failure at run time is (nm_cmdbuf_fail), though commit returns it */
            return nm_error(st, "%s (op %lld of %lld in the command buffer): %s", op->fn,
                            (long long)i, (long long)cb->nops, neat_last_error());
        if (nm_op_flags(op->kind) & NM_OPF_RUNTIME_CHECK) unguarded = checked = 1;
    }
    return NEAT_OK;
}

/* Record the ops into c->exec, and for a buffer with checks take_record after them (record:
 * the capturing submission's snapshot; each launch points the node at its own); returns OK
 * or a status whose message says why not. */
static neat_status capture(nm_device *dev, nm_cmdbuf *cb, int *record) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_device *d = cuda_dev(dev);
    cuda_cmdbuf *c = cuda_cb(cb);
    cudaGraph_t graph = NULL;
    neat_status st = cuda_check(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeRelaxed), fn,
                                "cudaStreamBeginCapture");
    if (st) return st;
    st = enqueue_ops(dev, cb, 1);
    neat_status closed = cuda_guards_close(dev);
    if (!st) st = closed;
    if (!st && c->checks) st = cuda_take_error_record(dev, cb, record, &c->take_node);
    neat_status end =
        cuda_check(cudaStreamEndCapture(d->stream, &graph), fn, "cudaStreamEndCapture");
    if (!st) st = end;
    if (!st) st = cuda_check(cudaGraphInstantiate(&c->exec, graph, 0), fn, "cudaGraphInstantiate");
    if (!st && c->checks) {
        c->graph = graph; /* take_node lives in it */
        graph = NULL;
    }
    if (graph) cudaGraphDestroy(graph);
    if (st) c->exec = NULL, c->take_node = NULL;
    return st;
}

static neat_status cmdbuf_state(nm_device *dev, nm_cmdbuf *cb) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_cmdbuf *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    c->slots = calloc((size_t)(cb->nops > 0 ? cb->nops : 1) * CUDA_SLOTS, sizeof *c->slots);
    neat_status st =
        c->slots ? NEAT_OK : nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    for (int64_t i = 0; i < cb->nops; i++) {
        if (nm_op_flags(cb->ops[i].kind) & NM_OPF_RUNTIME_CHECK) c->checks = 1;
        if (nm_op_flags(cb->ops[i].kind) & NM_OPF_COLLECTIVE) c->collectives = 1;
    }
    if (!st && c->checks) {
        void *err;
        st = nm_scratch_alloc(cb, CUDA_ERR_WORDS * sizeof(int), &err);
        c->err = err;
        c->err_unclear = 1; /* fresh pool memory: submit clears it on the stream */
    }
    if (!st) st = cuda_host_copies_init(cb, c);
    if (st) {
        cuda_host_copies_free(cb, c);
        free(c->slots);
        free(c);
        return st;
    }
    cb->impl = c;
    return NEAT_OK;
}

/* ---- submissions in flight -----------------------------------------------------------------
 * Every submission records two events around its work on the stream; they wait in
 * d->subs (oldest first) until cudaEventQuery finds `done` complete. Completing one reads
 * its snapshot of the buffer's error record (cuda_sub.record) into nm_cmdbuf_fail and its device
 * time, then publishes its seq in d->done_seq. d->reap_lock serialises completion (it calls
 * nm_cmdbuf_fail, which takes dev->lock; submit holds dev->lock then d->lock, so d->lock is
 * never held while nm_cmdbuf_fail runs). */

static cuda_sub *sub_push(cuda_device *d) {
    if (d->nsubs == d->capsubs) {
        int cap = d->capsubs ? 2 * d->capsubs : 64;
        cuda_sub *subs = malloc((size_t)cap * sizeof *subs);
        if (!subs) return NULL;
        for (int i = 0; i < d->nsubs; i++) subs[i] = d->subs[(d->first + i) % d->capsubs];
        free(d->subs);
        d->subs = subs;
        d->capsubs = cap;
        d->first = 0;
    }
    cuda_sub *s = &d->subs[(d->first + d->nsubs) % d->capsubs];
    memset(s, 0, sizeof *s);
    return s;
}

/* The ring is in seq order: look from the newest (the one asked for is usually recent). */
cudaEvent_t cuda_sub_done(cuda_device *d, uint64_t seq) {
    for (int i = d->nsubs - 1; i >= 0; i--) {
        const cuda_sub *s = &d->subs[(d->first + i) % d->capsubs];
        if (s->seq == seq) return s->done;
        if (s->seq < seq) break;
    }
    return NULL;
}

/* A snapshot of an error record (cuda_sub.record: pinned, mapped) from the spare list, else a
 * new one. d->lock held. */
static cudaError_t record_get(cuda_device *d, int **record) {
    *record = NULL;
    if (d->nspare_records) {
        *record = d->spare_records[--d->nspare_records];
        return cudaSuccess;
    }
    cudaError_t e =
        cudaHostAlloc((void **)record, CUDA_ERR_WORDS * sizeof(int), cudaHostAllocMapped);
    if (e != cudaSuccess) *record = NULL;
    return e;
}

static void record_put(cuda_device *d, int *record) {
    if (!record) return;
    if (d->nspare_records < CUDA_SPARE_EVENTS)
        d->spare_records[d->nspare_records++] = record;
    else
        cudaFreeHost(record);
}

/* An event from the spare list, else a new one. d->lock held. */
static cudaError_t event_get(cuda_device *d, cudaEvent_t *ev) {
    if (d->nspare) {
        *ev = d->spare[--d->nspare];
        return cudaSuccess;
    }
    return cudaEventCreate(ev);
}

static void event_put(cuda_device *d, cudaEvent_t ev) {
    if (!ev) return;
    if (d->nspare < CUDA_SPARE_EVENTS)
        d->spare[d->nspare++] = ev;
    else
        cudaEventDestroy(ev);
}

/* cuda_submit's work: d->lock held, the device current. */
static neat_status submit(nm_device *dev, nm_cmdbuf *cb, uint64_t seq) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_device *d = cuda_dev(dev);
    neat_status st = cb->impl ? NEAT_OK : cmdbuf_state(dev, cb);
    cuda_sub *sub = st ? NULL : sub_push(d);
    if (!st && !sub) st = nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    if (!st) st = cuda_check(event_get(d, &sub->start), fn, "cudaEventCreate");
    if (!st) st = cuda_check(event_get(d, &sub->done), fn, "cudaEventCreate");
    if (st) {
        if (sub) event_put(d, sub->start), event_put(d, sub->done);
        return st;
    }
    cuda_cmdbuf *c = cuda_cb(cb);
    /* The first commit of a buffer with collectives: do the ranks agree on them (comm.c)?
     * Checked once: a recorded buffer cannot change, so replays cost nothing. A mismatch is
     * final on every rank alike (they saw the same answer), so later commits of the buffer
     * are refused without asking the peers again. */
    if (c->collectives && !c->agreed && c->refusal != NEAT_ERR_SHAPE_MISMATCH) {
        int64_t at = 0;
        neat_status agree = cuda_comm_agree(dev, cb, &at);
        c->agreed = agree == NEAT_OK;
        if (agree) {
            c->refusal = agree, c->refusal_op = at;
            snprintf(c->refusal_msg, sizeof c->refusal_msg, "%s", neat_last_error());
        }
    }
    if (c->collectives && !c->agreed) {
        /* Refused: nothing runs, outputs stay untouched; wait reports why, as it reports an
         * op that failed at run time (complete_subs). */
        st = cuda_check(cudaEventRecord(sub->done, d->stream), fn, "cudaEventRecord");
        if (st) {
            event_put(d, sub->start), event_put(d, sub->done);
        } else {
            sub->seq = seq;
            sub->cb = cb;
            sub->refused = 1; /* talks to no peer: wait need not poll its comms */
            d->nsubs++;
        }
        return st;
    }
    st = cuda_stage_host_copies(cb, c);
    if (st) {
        event_put(d, sub->start), event_put(d, sub->done);
        return st;
    }
    if (c->checks) st = cuda_check(record_get(d, &sub->record), fn, "cudaHostAlloc");
    if (st) {
        event_put(d, sub->start), event_put(d, sub->done);
        return st;
    }
    uint64_t after = graph_after();
    /* A buffer of copies ahead only has nothing to capture. */
    if (!c->exec && !c->graph_failed && c->submits >= after && c->nahead < cb->nops) {
        st = capture(dev, cb, sub->record);
        if (st && after == 0) { /* test mode: a capture that fails is a failure */
            event_put(d, sub->start), event_put(d, sub->done);
            record_put(d, sub->record);
            sub->record = NULL;
            return st;
        }
        if (st) c->graph_failed = 1; /* run op by op below */
        st = NEAT_OK;
    }
    /* The copies ahead go after any capture (the stream waits for them outside the graph)
     * and before start, so the device time is the work's alone. */
    int uploaded = 0;
    if (!st) st = cuda_upload_ahead(dev, cb, &uploaded);
    if (!st) st = cuda_check(cudaEventRecord(sub->start, d->stream), fn, "cudaEventRecord");
    int timed = st == NEAT_OK;
    if (!st && c->err_unclear) { /* else the previous submission's take_record cleared it */
        st = cuda_check(cudaMemsetAsync(c->err, 0, CUDA_ERR_WORDS * sizeof(int), d->main_stream),
                        fn, "cudaMemsetAsync");
        if (!st) c->err_unclear = 0;
    }
    /* The ops, then this submission's record to its own snapshot, cleared for the next one
     * (guard.cu): in a graph its last node, pointed at this snapshot; else one kernel. */
    if (!st && c->exec) {
        if (c->checks) st = cuda_set_take_record(dev, cb, sub->record);
        if (!st) st = cuda_check(cudaGraphLaunch(c->exec, d->stream), fn, "cudaGraphLaunch");
    } else if (!st) {
        st = enqueue_ops(dev, cb, 0);
        if (!st && c->checks) st = cuda_take_error_record(dev, cb, sub->record, NULL);
    }
    c->submits++;
    /* Recorded even after a failure: what was enqueued must complete before reuse. */
    neat_status rec = cuda_check(cudaEventRecord(sub->done, d->stream), fn, "cudaEventRecord");
    if (!st) st = rec;
    if (st == NEAT_OK) {
        sub->seq = seq;
        sub->cb = cb;
        sub->timed = timed;
        sub->checks = c->checks;
        sub->collectives = c->collectives;
        d->nsubs++;
    } else {
        /* The core gives the tensors back on a failed commit: what was enqueued before the
         * failure must finish first (an error path; it may wait). */
        if (rec == NEAT_OK)
            cudaEventSynchronize(sub->done);
        else
            cudaStreamSynchronize(d->stream);
        if (uploaded) cudaStreamSynchronize(d->upload_stream);
        cudaGetLastError();
        event_put(d, sub->start), event_put(d, sub->done);
        record_put(d, sub->record);
        sub->record = NULL;
        if (c->checks) c->err_unclear = 1; /* an op may have set it; no snapshot took it */
    }
    return st;
}

static neat_status cuda_submit(nm_device *dev, nm_cmdbuf *cb, uint64_t seq) {
    cuda_device *d = cuda_dev(dev);
    int prev;
    neat_status st = cuda_enter(d->index, "neat_cmdbuf_commit", &prev);
    if (!st) {
        pthread_mutex_lock(&d->lock);
        st = submit(dev, cb, seq);
        pthread_mutex_unlock(&d->lock);
    }
    cuda_leave(prev);
    return st;
}

/* The error record of submission s as its take_record left it (a label out of range, an
 * invalid hyper), as a failure of its op; returns the index of that op (the ops before it
 * ran), or cb->nops when nothing failed. Host memory: no CUDA call, nothing enqueued. */
static int64_t read_error_record(const cuda_sub *s) {
    nm_cmdbuf *cb = s->cb;
    const volatile int *rec = s->record; /* written by the device */
    char msg[NM_MSG_MAX];
    if (!rec[CUDA_ERR_FLAG]) return cb->nops;
    int kind = rec[CUDA_ERR_KIND], row = rec[CUDA_ERR_ROW], bits = rec[CUDA_ERR_VALUE];
    int64_t opi = rec[CUDA_ERR_OP];
    float value;
    memcpy(&value, &bits, sizeof value);
    if (kind == CUDA_ERR_HYPER) {
        /* The same words as every backend's check: nm_hyper_valid on the offending value. */
        if (row == 0)
            nm_hyper_valid(value, 1, 0, msg, sizeof msg);
        else
            nm_hyper_valid(0, value, 1, msg, sizeof msg);
    } else {
        long long cols =
            opi >= 0 && opi < cb->nops ? (long long)cb->ops[opi].u.softmax_xent.cols : 0;
        snprintf(msg, sizeof msg, "labels[%d] = %g is not a class index in 0..%lld", row,
                 (double)value, cols - 1);
    }
    nm_cmdbuf_fail(cb, opi, NEAT_ERR_INVALID_ARGUMENT, msg);
    return opi;
}

/* Complete every submission whose `done` has passed; returns a device failure (a sticky
 * error: then every submission counts as completed, each buffer told why). The device is
 * current (cuda_completed, cuda_wait_seq). */
static neat_status complete_subs(nm_device *dev, int block) {
    cuda_device *d = cuda_dev(dev);
    neat_status failure = NEAT_OK;
    /* completed() never blocks: another thread completing (or waiting) will publish. */
    if (!block && pthread_mutex_trylock(&d->reap_lock) != 0) return NEAT_OK;
    if (block) pthread_mutex_lock(&d->reap_lock);
    for (;;) {
        pthread_mutex_lock(&d->lock);
        if (d->nsubs == 0) {
            pthread_mutex_unlock(&d->lock);
            break;
        }
        cuda_sub s = d->subs[d->first];
        pthread_mutex_unlock(&d->lock);
        cudaError_t e = cudaEventQuery(s.done);
        if (e == cudaErrorNotReady) break;
        if (e != cudaSuccess) {
            char msg[NM_MSG_MAX];
            snprintf(msg, sizeof msg, "the command buffer failed on the GPU: %s (%s)",
                     cudaGetErrorString(e), cudaGetErrorName(e));
            cudaGetLastError();
            nm_cmdbuf_fail_all(s.cb, NEAT_ERR_BACKEND_ERROR, msg);
            failure = nm_error(NEAT_ERR_BACKEND_ERROR, "%s", msg);
        } else if (s.refused) {
            const cuda_cmdbuf *c = cuda_cb(s.cb);
            nm_cmdbuf_fail(s.cb, c->refusal_op, c->refusal, c->refusal_msg);
        } else {
            int64_t ran = s.checks ? read_error_record(&s) : s.cb->nops;
            cuda_finish_host_copies(s.cb, ran);
            float ms;
            if (s.timed) {
                if (cudaEventElapsedTime(&ms, s.start, s.done) == cudaSuccess) {
                    int64_t ns = (int64_t)((double)ms * 1e6);
                    __atomic_store_n(&s.cb->device_ns, ns > 0 ? ns : 1, __ATOMIC_RELEASE);
                } else {
                    cudaGetLastError(); /* no time this round; not a failure of the work */
                }
            }
        }
        pthread_mutex_lock(&d->lock);
        d->first = (d->first + 1) % d->capsubs;
        d->nsubs--;
        event_put(d, s.start);
        event_put(d, s.done);
        record_put(d, s.record);
        if (s.seq > d->done_seq) __atomic_store_n(&d->done_seq, s.seq, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_unlock(&d->reap_lock);
    return failure;
}

/* Asked by every call that reaps (commit, destroy, wait): it reports nothing, so a device
 * that cannot be made current only completes nothing now; wait reports that failure. */
static uint64_t cuda_completed(nm_device *dev) {
    cuda_device *d = cuda_dev(dev);
    int prev;
    if (cuda_enter(d->index, "neat (completion)", &prev) == NEAT_OK) complete_subs(dev, 0);
    cuda_leave(prev);
    return __atomic_load_n(&d->done_seq, __ATOMIC_ACQUIRE);
}

/* Block on the `done` event of the first submission at or past seq (the stream runs them
 * in order), holding reap_lock so that the event is not recycled meanwhile (completed()
 * on other threads then skips: it never blocks), then complete what finished. */
static neat_status cuda_wait_seq(nm_device *dev, uint64_t seq) {
    cuda_device *d = cuda_dev(dev);
    int prev;
    neat_status st = cuda_enter(d->index, "neat_cmdbuf_wait", &prev);
    if (st) return st;
    while (__atomic_load_n(&d->done_seq, __ATOMIC_ACQUIRE) < seq) {
        neat_status f = complete_subs(dev, 1);
        if (f) st = f;
        if (__atomic_load_n(&d->done_seq, __ATOMIC_ACQUIRE) >= seq) break;
        /* Block on the event of the submission seq (found under the lock; events are only
         * recycled by complete_subs, which this thread is not running). */
        cudaEvent_t ev = NULL;
        nm_cmdbuf *peers = NULL; /* the oldest submission that waits on other ranks */
        pthread_mutex_lock(&d->reap_lock);
        pthread_mutex_lock(&d->lock);
        for (int i = 0; i < d->nsubs && !ev; i++) {
            const cuda_sub *s = &d->subs[(d->first + i) % d->capsubs];
            if (s->collectives && !peers) peers = s->cb;
            if (s->seq >= seq) ev = s->done;
        }
        pthread_mutex_unlock(&d->lock);
        /* A collective may wait on a peer that never comes: poll, with the comm's timeout. */
        cudaError_t e = !ev     ? cudaSuccess
                        : peers ? cuda_comm_wait(dev, ev, peers)
                                : cudaEventSynchronize(ev);
        pthread_mutex_unlock(&d->reap_lock);
        if (e != cudaSuccess) {
            cudaGetLastError();
            f = complete_subs(dev, 1);
            st = f ? f : cuda_check(e, "neat_cmdbuf_wait", "cudaEventSynchronize");
            break;
        }
        if (!ev) break; /* nothing in flight reaches seq: it failed to submit */
    }
    cuda_leave(prev);
    return st;
}

/* The buffer is idle: the core calls this only after its submissions completed. */
static void cuda_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb) {
    cuda_cmdbuf *c = cuda_cb(cb);
    if (!c) return;
    int prev;
    cuda_enter(cuda_dev(dev)->index, "neat_cmdbuf_reset", &prev); /* nothing to report to */
    if (c->exec) cudaGraphExecDestroy(c->exec);
    if (c->graph) cudaGraphDestroy(c->graph);
    cuda_host_copies_free(cb, c);
    free(c->slots);
    free(c);
    cb->impl = NULL;
    cuda_leave(prev);
}

/* ---- element types ------------------------------------------------------------------------ */

/* The ops CUDA runs on bf16/f16 tensors: the CPU's set (half_ops.h; half.cu says which
 * run natively and which on float32 copies), neat_cast, and the ops that take every dtype
 * the core lets through (optim.cu: the mixed optimizers' grad and param; loss_scale.cu). */
static int runs_half(nm_op_kind kind) { return nm_half_native(kind) || nm_half_via_f32(kind); }

/* Sizes that a kernel or a vendor library of this backend cannot take, refused when the op
 * is recorded rather than half-way through a buffer (common.h: each check mirrors the
 * conditions under which its op's run reaches the limit). */
static neat_status check_limits(nm_device *dev, const nm_op *op) {
    switch (op->kind) {
    case NM_OP_MATMUL: return cuda_matmul_check(op);
    case NM_OP_CONV2D_FORWARD:
    case NM_OP_CONV2D_BACKWARD: return cuda_conv2d_check(dev, op);
    case NM_OP_MAXPOOL2D_BACKWARD: return cuda_maxpool2d_backward_check(op);
    case NM_OP_SUM: return cuda_sum_check(op);
    default: return NEAT_OK;
    }
}

static neat_status cuda_op_check(nm_device *dev, const nm_op *op) {
    int n, nl;
    nm_tensor *const *ts = nm_op_tensors(op, &n);
    nm_tensor *const *list = nm_op_list(op, &nl);
    for (int i = 0; i < n + nl && !runs_half(op->kind); i++) {
        const nm_tensor *t = i < n ? ts[i] : list[i - n];
        if (t && t->dtype != NEAT_F32)
            return nm_error(NEAT_ERR_UNSUPPORTED,
                            "%s: the cuda backend does not run this op on %s tensors (float32 "
                            "only; neat_cast converts)",
                            op->fn, neat_dtype_name(t->dtype));
    }
    return check_limits(dev, op);
}

const nm_backend_ops nm_cuda_backend = {
    .abi_version = NM_BACKEND_ABI,
    .kind = NEAT_BACKEND_CUDA,
    .name = "cuda",
    .device_open = cuda_device_open,
    .device_close = cuda_device_close,
    .mem_alloc = cuda_mem_alloc,
    .mem_free = cuda_mem_free,
    .copy_in = cuda_copy_in,
    .copy_out = cuda_copy_out,
    .submit = cuda_submit,
    .completed = cuda_completed,
    .wait_seq = cuda_wait_seq,
    .cmdbuf_release = cuda_cmdbuf_release,
    .op_check = cuda_op_check,
    .comm_id_create = cuda_comm_id_create,
    .comm_create = cuda_comm_create,
    .comm_create_all = cuda_comm_create_all,
    .comm_destroy = cuda_comm_destroy,
    .op = NM_OP_TABLE_WITH_COLLECTIVES(cuda),
};
