/*
 * backend.c — the CUDA backend's table: device, memory, copies, and command-buffer
 * execution on the device's stream.
 *
 * submit(): the first submission of a buffer enqueues its ops one by one on the stream
 * (descriptors, algorithms and scratch memory are made then); the second captures the same
 * ops into a CUDA graph (stream capture, nothing allocated or searched during it) and
 * launches it; every later submission is one graph launch. A buffer whose capture fails
 * keeps being enqueued op by op (NEATML_CUDA_GRAPHS changes when capture happens).
 * An event recorded after each submission is what wait() blocks on; wait() then reads the
 * buffer's error record (an out-of-range label) when the buffer has ops that can set it.
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- status mapping ------------------------------------------------------------------------ */

neat_status cuda_check(cudaError_t e, const char *what, const char *call) {
    if (e == cudaSuccess) return NEAT_OK;
    cudaGetLastError(); /* clear a non-sticky error so that it is not reported twice */
    return nm_error(e == cudaErrorMemoryAllocation ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR,
                    "%s: %s failed: %s (%s)", what, call, cudaGetErrorString(e), cudaGetErrorName(e));
}

neat_status cublas_check(cublasStatus_t s, const char *what, const char *call) {
    if (s == CUBLAS_STATUS_SUCCESS) return NEAT_OK;
    return nm_error(s == CUBLAS_STATUS_ALLOC_FAILED ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR,
                    "%s: %s failed: %s (%s)", what, call, cublasLtGetStatusString(s),
                    cublasLtGetStatusName(s));
}

neat_status cudnn_check(cudnnStatus_t s, const char *what, const char *call) {
    if (s == CUDNN_STATUS_SUCCESS) return NEAT_OK;
    return nm_error(s == CUDNN_STATUS_ALLOC_FAILED ? NEAT_ERR_OUT_OF_MEMORY : NEAT_ERR_BACKEND_ERROR,
                    "%s: %s failed: %s", what, call, cudnnGetErrorString(s));
}

/* ---- scratch ----------------------------------------------------------------------------------- */

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

/* ---- device ------------------------------------------------------------------------------------ */

static void release_device(cuda_device *d) {
    cuda_matmul_cache_free(d);
    cuda_conv_cache_free(d);
    if (d->dnn) cudnnDestroy(d->dnn);
    if (d->lt) cublasLtDestroy(d->lt);
    if (d->lt_ws) cudaFree(d->lt_ws);
    if (d->stream) cudaStreamDestroy(d->stream);
    pthread_mutex_destroy(&d->lock);
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
        return nm_error(NEAT_ERR_UNSUPPORTED, "%s: no CUDA device %d: %d present", fn, index, count);
    cuda_device *d = calloc(1, sizeof *d);
    if (!d) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    d->index = index;
    pthread_mutex_init(&d->lock, NULL);
    struct cudaDeviceProp prop;
    neat_status st = cuda_check(cudaSetDevice(index), fn, "cudaSetDevice");
    if (!st) st = cuda_check(cudaGetDeviceProperties(&prop, index), fn, "cudaGetDeviceProperties");
    if (!st) st = cuda_check(cudaStreamCreateWithFlags(&d->stream, cudaStreamNonBlocking), fn, "cudaStreamCreateWithFlags");
    if (!st) st = cublas_check(cublasLtCreate(&d->lt), fn, "cublasLtCreate");
    if (!st) st = cudnn_check(cudnnCreate(&d->dnn), fn, "cudnnCreate");
    if (!st) st = cudnn_check(cudnnSetStream(d->dnn, d->stream), fn, "cudnnSetStream");
    if (!st) st = cuda_check(cudaMalloc(&d->lt_ws, CUDA_LT_WORKSPACE), fn, "cudaMalloc(cuBLASLt workspace)");
    if (st) {
        release_device(d);
        return st;
    }
    d->sms = prop.multiProcessorCount > 0 ? prop.multiProcessorCount : 1;
    d->total_memory = prop.totalGlobalMem;
    dev->impl = d;
    snprintf(dev->props.name, sizeof dev->props.name, "%.127s", prop.name);
    dev->props.total_memory = (int64_t)prop.totalGlobalMem;
    dev->props.num_threads = d->sms;
    return NEAT_OK;
}

static void cuda_device_close(nm_device *dev) {
    cuda_device *d = cuda_dev(dev);
    if (!d) return;
    cudaSetDevice(d->index);
    cudaStreamSynchronize(d->stream);
    release_device(d);
    dev->impl = NULL;
}

static neat_status cuda_mem_alloc(nm_device *dev, size_t bytes, void **ptr) {
    *ptr = NULL;
    if (bytes == 0) return NEAT_OK;
    cuda_device *d = cuda_dev(dev);
    /* More than the card has cannot succeed: answer without a driver call. */
    if (bytes > d->total_memory)
        return nm_error(NEAT_ERR_OUT_OF_MEMORY, "cudaMalloc of %zu bytes: the GPU has %zu",
                        bytes, d->total_memory);
    cudaSetDevice(d->index);
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e == cudaSuccess) return NEAT_OK;
    *ptr = NULL;
    return cuda_check(e, "neat (device memory pool)", "cudaMalloc");
}

static void cuda_mem_free(nm_device *dev, void *ptr, size_t bytes) {
    if (!ptr) return;
    cudaSetDevice(cuda_dev(dev)->index);
    cudaFree(ptr);
}

static neat_status copy(nm_device *dev, void *dst, const void *src, size_t bytes,
                        enum cudaMemcpyKind kind, const char *what) {
    if (bytes == 0) return NEAT_OK;
    cuda_device *d = cuda_dev(dev);
    cudaSetDevice(d->index);
    neat_status st = cuda_check(cudaMemcpyAsync(dst, src, bytes, kind, d->stream), what, "cudaMemcpyAsync");
    if (!st) st = cuda_check(cudaStreamSynchronize(d->stream), what, "cudaStreamSynchronize");
    return st;
}

static neat_status cuda_copy_in(nm_device *dev, void *dst, const void *src, size_t bytes) {
    return copy(dev, dst, src, bytes, cudaMemcpyHostToDevice, "neat_tensor_write");
}

static neat_status cuda_copy_out(nm_device *dev, void *dst, const void *src, size_t bytes) {
    return copy(dev, dst, src, bytes, cudaMemcpyDeviceToHost, "neat_tensor_read");
}

/* ---- command buffers --------------------------------------------------------------------------- */

static neat_status enqueue_ops(nm_device *dev, nm_cmdbuf *cb) {
    cuda_cmdbuf *c = cuda_cb(cb);
    for (int64_t i = 0; i < cb->nops; i++) {
        const nm_op *op = &cb->ops[i];
        c->cur_op = i;
        neat_status st = dev->be->op[op->kind](dev, cb, op);
        if (st) return st;
    }
    return NEAT_OK;
}

/* Record the ops into c->exec; returns OK or a status whose message says why not. */
static neat_status capture(nm_device *dev, nm_cmdbuf *cb) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_device *d = cuda_dev(dev);
    cuda_cmdbuf *c = cuda_cb(cb);
    cudaGraph_t graph = NULL;
    neat_status st = cuda_check(cudaStreamBeginCapture(d->stream, cudaStreamCaptureModeRelaxed), fn,
                                "cudaStreamBeginCapture");
    if (st) return st;
    st = enqueue_ops(dev, cb);
    neat_status end = cuda_check(cudaStreamEndCapture(d->stream, &graph), fn, "cudaStreamEndCapture");
    if (!st) st = end;
    if (!st) st = cuda_check(cudaGraphInstantiate(&c->exec, graph, 0), fn, "cudaGraphInstantiate");
    if (graph) cudaGraphDestroy(graph);
    if (st) c->exec = NULL;
    return st;
}

static neat_status cmdbuf_state(nm_device *dev, nm_cmdbuf *cb) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_cmdbuf *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    c->slots = calloc((size_t)(cb->nops > 0 ? cb->nops : 1) * CUDA_SLOTS, sizeof *c->slots);
    neat_status st = c->slots ? NEAT_OK : nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    if (!st) st = cuda_check(cudaEventCreate(&c->start), fn, "cudaEventCreate");
    if (!st) st = cuda_check(cudaEventCreate(&c->done), fn, "cudaEventCreate");
    for (int64_t i = 0; i < cb->nops; i++)
        if (cb->ops[i].kind == NM_OP_SOFTMAX_XENT || cb->ops[i].kind == NM_OP_SOFTMAX_XENT_BACKWARD)
            c->checks = 1;
    if (!st && c->checks) {
        void *err;
        st = nm_scratch_alloc(cb, CUDA_ERR_WORDS * sizeof(int), &err);
        if (!st) {
            c->err = err;
            st = cuda_check(cudaMemsetAsync(c->err, 0, CUDA_ERR_WORDS * sizeof(int), cuda_dev(dev)->stream),
                            fn, "cudaMemsetAsync");
        }
    }
    if (st) {
        if (c->start) cudaEventDestroy(c->start);
        if (c->done) cudaEventDestroy(c->done);
        free(c->slots);
        free(c);
        return st;
    }
    cb->impl = c;
    return NEAT_OK;
}

static neat_status cuda_submit(nm_device *dev, nm_cmdbuf *cb) {
    static const char fn[] = "neat_cmdbuf_commit";
    cuda_device *d = cuda_dev(dev);
    pthread_mutex_lock(&d->lock);
    cudaSetDevice(d->index);
    neat_status st = cb->impl ? NEAT_OK : cmdbuf_state(dev, cb);
    if (st) {
        pthread_mutex_unlock(&d->lock);
        return st;
    }
    cuda_cmdbuf *c = cuda_cb(cb);
    uint64_t after = graph_after();
    if (!c->exec && !c->graph_failed && c->submits >= after) {
        st = capture(dev, cb);
        if (st && after == 0) { /* test mode: a capture that fails is a failure */
            pthread_mutex_unlock(&d->lock);
            return st;
        }
        if (st) c->graph_failed = 1; /* run op by op below */
    }
    /* start is recorded after any capture, so the device time is the work's alone */
    st = cuda_check(cudaEventRecord(c->start, d->stream), fn, "cudaEventRecord");
    int timed = st == NEAT_OK;
    if (!st) {
        if (c->exec) st = cuda_check(cudaGraphLaunch(c->exec, d->stream), fn, "cudaGraphLaunch");
        else st = enqueue_ops(dev, cb);
    }
    c->submits++;
    /* Recorded even after a failure: wait() and release must cover what was enqueued. */
    neat_status rec = cuda_check(cudaEventRecord(c->done, d->stream), fn, "cudaEventRecord");
    if (!st) st = rec;
    c->timed = timed && st == NEAT_OK;
    if (!st) cb->pending = 1;
    pthread_mutex_unlock(&d->lock);
    return st;
}

/* The error record set by a kernel (a label out of range), as an async failure of cb. */
static void read_error_record(nm_device *dev, nm_cmdbuf *cb) {
    cuda_cmdbuf *c = cuda_cb(cb);
    int rec[CUDA_ERR_WORDS];
    char msg[NM_MSG_MAX];
    cudaError_t e = cudaMemcpy(rec, c->err, sizeof rec, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        cudaGetLastError();
        snprintf(msg, sizeof msg, "neat_cmdbuf_wait: reading the error record failed: %s", cudaGetErrorString(e));
        nm_cmdbuf_fail(cb, NEAT_ERR_BACKEND_ERROR, msg);
        return;
    }
    if (!rec[CUDA_ERR_FLAG]) return;
    float label;
    memcpy(&label, &rec[CUDA_ERR_VALUE], sizeof label);
    int64_t opi = rec[CUDA_ERR_OP];
    const char *name = "neat_softmax_cross_entropy";
    long long cols = 0;
    if (opi >= 0 && opi < cb->nops) {
        const nm_op *op = &cb->ops[opi];
        if (op->kind == NM_OP_SOFTMAX_XENT_BACKWARD) name = "neat_softmax_cross_entropy_backward";
        cols = (long long)op->u.softmax_xent.cols; /* the same struct for both kinds */
    }
    snprintf(msg, sizeof msg,
             "%s: labels[%d] = %g is not a class index in 0..%lld (op %lld of the command buffer)",
             name, rec[CUDA_ERR_ROW], (double)label, cols - 1, (long long)opi);
    nm_cmdbuf_fail(cb, NEAT_ERR_INVALID_ARGUMENT, msg);
    /* Clear it behind everything enqueued so far (this buffer's work has completed). */
    cudaMemsetAsync(c->err, 0, sizeof rec, cuda_dev(dev)->stream);
}

static neat_status cuda_wait(nm_device *dev, nm_cmdbuf *cb) {
    cuda_device *d = cuda_dev(dev);
    cuda_cmdbuf *c = cuda_cb(cb);
    cudaSetDevice(d->index);
    cudaError_t e = c ? cudaEventSynchronize(c->done) : cudaSuccess;
    pthread_mutex_lock(&d->lock);
    if (e != cudaSuccess) {
        char msg[NM_MSG_MAX];
        snprintf(msg, sizeof msg, "neat_cmdbuf_wait: the command buffer failed on the GPU: %s (%s)",
                 cudaGetErrorString(e), cudaGetErrorName(e));
        cudaGetLastError();
        nm_cmdbuf_fail(cb, NEAT_ERR_BACKEND_ERROR, msg);
    } else {
        if (c && c->checks) read_error_record(dev, cb);
        float ms;
        if (c && c->timed && cb->async_status == NEAT_OK) {
            if (cudaEventElapsedTime(&ms, c->start, c->done) == cudaSuccess) {
                int64_t ns = (int64_t)((double)ms * 1e6);
                __atomic_store_n(&cb->device_ns, ns > 0 ? ns : 1, __ATOMIC_RELEASE);
            } else {
                cudaGetLastError(); /* no time this round; not a failure of the work */
            }
        }
    }
    cb->pending = 0;
    neat_status st = cb->async_status;
    if (st != NEAT_OK) {
        nm_set_error_text(cb->async_msg);
        cb->async_status = NEAT_OK;
        cb->async_msg[0] = 0;
    }
    pthread_mutex_unlock(&d->lock);
    return st;
}

static neat_status cuda_synchronize(nm_device *dev) {
    cuda_device *d = cuda_dev(dev);
    cudaSetDevice(d->index);
    return cuda_check(cudaStreamSynchronize(d->stream), "neat_device_synchronize", "cudaStreamSynchronize");
}

static void cuda_cmdbuf_release(nm_device *dev, nm_cmdbuf *cb) {
    cuda_cmdbuf *c = cuda_cb(cb);
    if (!c) return;
    cudaSetDevice(cuda_dev(dev)->index);
    /* Work of a failed commit may still run; its scratch returns to the pool right after. */
    cudaEventSynchronize(c->done);
    if (c->exec) cudaGraphExecDestroy(c->exec);
    cudaEventDestroy(c->start);
    cudaEventDestroy(c->done);
    free(c->slots);
    free(c);
    cb->impl = NULL;
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
    .wait = cuda_wait,
    .synchronize = cuda_synchronize,
    .cmdbuf_release = cuda_cmdbuf_release,
    .op = NM_OP_TABLE(cuda),
};
