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

neat_status cuda_host_copies_init(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    static const char fn[] = "neat_cmdbuf_commit";
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
        neat_status st = cuda_check(cudaHostAlloc(&c->host[i], copy_bytes(op), cudaHostAllocMapped),
                                    op->fn, "cudaHostAlloc (staging)");
        if (!st)
            st = cuda_check(cudaHostGetDevicePointer(&c->host_dev[i], c->host[i], 0), op->fn,
                            "cudaHostGetDevicePointer");
        if (!st && op->kind == NM_OP_COPY_FROM_HOST)
            st = cuda_check(cudaEventCreateWithFlags(&c->consumed[i], cudaEventDisableTiming),
                            op->fn, "cudaEventCreate");
        if (st) return st;
        c->copies_out |= op->kind == NM_OP_COPY_TO_HOST;
    }
    return NEAT_OK;
}

void cuda_host_copies_free(nm_cmdbuf *cb, cuda_cmdbuf *c) {
    if (!c->host) return;
    for (int64_t i = 0; i < cb->nops; i++) {
        if (c->host[i]) cudaFreeHost(c->host[i]);
        if (c->consumed[i]) cudaEventDestroy(c->consumed[i]);
    }
    free(c->host);
    free(c->host_dev);
    free(c->consumed);
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

neat_status cuda_copy_to_host(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    size_t bytes = copy_bytes(op);
    if (bytes == 0) return NEAT_OK;
    cuda_cmdbuf *c = cuda_cb(cb);
    return cuda_copy_f32(dev, op->u.copy_to_host.t->data, (float *)c->host_dev[op - cb->ops],
                         op->u.copy_to_host.t->numel, op->fn);
}
