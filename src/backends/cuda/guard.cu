/*
 * guard.cu — the rest of a submission runs only if no op before it failed.
 *
 * Ops that can fail while they run (op_list.h: NM_OPF_RUNTIME_CHECK — the cross-entropy's
 * labels, the optimizers' hyper) check their input first and set the buffer's error record
 * (common.h) instead of writing anything; their own kernels also do nothing once the record
 * is set. Any other op enqueued after one of them is guarded, so that it does not run after
 * a failure either:
 *   - eager submission (the first commit, or NEATML_CUDA_GRAPHS=0): the host waits for the
 *     stream and reads the record; if it is set the rest of the buffer is not enqueued;
 *   - stream capture (a CUDA graph): a conditional IF node whose condition a one-thread
 *     kernel sets from the record, and whose body receives the rest of the buffer: the
 *     device skips it. The body is captured on a stream of its own (d->stream is switched
 *     to it, and cuDNN with it, until the capture ends), nested one level per guard.
 * Conditional bodies take kernels, memcopies and memsets only: an op that records an event
 * (neat_copy_from_host) after a guard makes the capture fail, and that buffer then runs
 * eagerly (correct, one host wait per guard).
 *
 * The record belongs to one submission at a time: take_record, after the submission's work
 * on the main stream, copies the record into that submission's own snapshot in host memory
 * and clears it. Run op by op, submit (backend.c) launches it after the ops; in a captured
 * graph it is the last node (outside every guard's body), and before each launch submit
 * points it at that submission's snapshot (cudaGraphExecKernelNodeSetParams: launches
 * already queued keep theirs), so that it costs no launch of its own between graphs (on the
 * H200 the LeNet step took 0.2735 ms with a kernel of its own after each graph, 0.263-0.268
 * with the node, 0.260-0.266 before either: docs/BENCHMARKS.md, table L). The next
 * submission of the buffer, queued behind on the same stream, starts from a clear record
 * whether or not the host has read the snapshot yet, and completion reads each
 * submission's snapshot, not the live record (so nothing is queued at completion either).
 */
#include "common.cuh"

__global__ void set_if_ok(cudaGraphConditionalHandle h, const int *err) {
    cudaGraphSetConditional(h, *(volatile const int *)(err + CUDA_ERR_FLAG) == 0 ? 1u : 0u);
}

/* One thread: CUDA_ERR_WORDS words. Launched plainly (not cuda_launch): it starts after
 * every earlier kernel of the stream has completed, and its writes to mapped host memory
 * are visible to the host once the submission's `done` event has completed. */
__global__ void take_record(int *err, int *record) {
    for (int i = 0; i < CUDA_ERR_WORDS; i++) {
        record[i] = err[i];
        err[i] = 0;
    }
}

extern "C" {

neat_status cuda_take_error_record(nm_device *dev, nm_cmdbuf *cb, int *record,
                                   cudaGraphNode_t *node) {
    static const char what[] = "neat_cmdbuf_commit";
    cudaStream_t s = cuda_dev(dev)->main_stream;
    int *mapped;
    neat_status st = cuda_check(cudaHostGetDevicePointer((void **)&mapped, record, 0), what,
                                "cudaHostGetDevicePointer");
    if (st) return st;
    take_record<<<1, 1, 0, s>>>(cuda_cb(cb)->err, mapped);
    st = cuda_launched(what, "take_record");
    if (st || !node) return st;
    /* Captured: the node just added is the capture's one dependency now. */
    cudaStreamCaptureStatus status;
    const cudaGraphNode_t *deps = NULL;
    size_t ndeps = 0;
    st = cuda_check(cudaStreamGetCaptureInfo(s, &status, NULL, NULL, &deps, NULL, &ndeps), what,
                    "cudaStreamGetCaptureInfo");
    if (!st && ndeps != 1)
        st = nm_error(NEAT_ERR_INTERNAL, "%s: take_record captured after %zu nodes, not 1", what,
                      ndeps);
    if (!st) *node = deps[0];
    return st;
}

neat_status cuda_set_take_record(nm_device *dev, nm_cmdbuf *cb, int *record) {
    static const char what[] = "neat_cmdbuf_commit";
    cuda_cmdbuf *c = cuda_cb(cb);
    int *mapped;
    neat_status st = cuda_check(cudaHostGetDevicePointer((void **)&mapped, record, 0), what,
                                "cudaHostGetDevicePointer");
    if (st) return st;
    (void)dev;
    void *args[2] = {&c->err, &mapped};
    cudaKernelNodeParams p = {};
    p.func = (void *)take_record;
    p.gridDim = dim3(1);
    p.blockDim = dim3(1);
    p.kernelParams = args;
    return cuda_check(cudaGraphExecKernelNodeSetParams(c->exec, c->take_node, &p), what,
                      "cudaGraphExecKernelNodeSetParams");
}

/* Point d->stream (and cuDNN) at s. */
static neat_status use_stream(cuda_device *d, cudaStream_t s, const char *what) {
    d->stream = s;
    return cudnn_check(cudnnSetStream(d->dnn, s), what, "cudnnSetStream");
}

neat_status cuda_guard(nm_device *dev, nm_cmdbuf *cb, int capturing, int *stop) {
    static const char what[] = "neat_cmdbuf_commit (run-time check)";
    cuda_device *d = cuda_dev(dev);
    cuda_cmdbuf *c = cuda_cb(cb);
    *stop = 0;
    if (!capturing) {
        int flag = 0;
        neat_status st =
            cuda_check(cudaStreamSynchronize(d->stream), what, "cudaStreamSynchronize");
        if (!st)
            st = cuda_check(
                cudaMemcpy(&flag, c->err + CUDA_ERR_FLAG, sizeof flag, cudaMemcpyDeviceToHost),
                what, "cudaMemcpy");
        *stop = flag != 0;
        return st;
    }
    if (d->guard_depth == CUDA_MAX_GUARDS)
        return nm_error(NEAT_ERR_UNSUPPORTED,
                        "%s: more than %d ops that check their input at run "
                        "time, each followed by other ops, in one graph",
                        what, CUDA_MAX_GUARDS);
    cudaStream_t s = d->stream;
    cudaStreamCaptureStatus status;
    cudaGraph_t graph;
    const cudaGraphNode_t *deps;
    size_t ndeps;
    cudaGraphConditionalHandle h;
    neat_status st =
        cuda_check(cudaStreamGetCaptureInfo(s, &status, NULL, &graph, NULL, NULL, NULL), what,
                   "cudaStreamGetCaptureInfo");
    if (!st)
        st = cuda_check(cudaGraphConditionalHandleCreate(&h, graph, 0, 0), what,
                        "cudaGraphConditionalHandleCreate");
    if (st) return st;
    set_if_ok<<<1, 1, 0, s>>>(h, c->err);
    st = cuda_launched(what, "set_if_ok");
    if (!st)
        st = cuda_check(cudaStreamGetCaptureInfo(s, &status, NULL, &graph, &deps, NULL, &ndeps),
                        what, "cudaStreamGetCaptureInfo");
    if (st) return st;
    cudaGraphNodeParams p = {}; /* zeroed: reserved fields must be 0 */
    p.type = cudaGraphNodeTypeConditional;
    p.conditional.handle = h;
    p.conditional.type = cudaGraphCondTypeIf;
    p.conditional.size = 1;
    cudaGraphNode_t node;
    st =
        cuda_check(cudaGraphAddNode(&node, graph, deps, NULL, ndeps, &p), what, "cudaGraphAddNode");
    if (!st)
        st = cuda_check(cudaStreamUpdateCaptureDependencies(s, &node, NULL, 1,
                                                            cudaStreamSetCaptureDependencies),
                        what, "cudaStreamUpdateCaptureDependencies");
    if (st) return st;
    cudaStream_t *bs = &d->guard_streams[d->guard_depth];
    if (!*bs)
        st = cuda_check(cudaStreamCreateWithFlags(bs, cudaStreamNonBlocking), what,
                        "cudaStreamCreateWithFlags");
    if (!st)
        st = cuda_check(cudaStreamBeginCaptureToGraph(*bs, p.conditional.phGraph_out[0], NULL, NULL,
                                                      0, cudaStreamCaptureModeRelaxed),
                        what, "cudaStreamBeginCaptureToGraph");
    if (st) return st;
    d->guard_depth++;
    return use_stream(d, *bs, what);
}

neat_status cuda_guards_close(nm_device *dev) {
    static const char what[] = "neat_cmdbuf_commit (run-time check)";
    cuda_device *d = cuda_dev(dev);
    neat_status st = NEAT_OK;
    while (d->guard_depth > 0) {
        cudaGraph_t body;
        neat_status e = cuda_check(cudaStreamEndCapture(d->guard_streams[--d->guard_depth], &body),
                                   what, "cudaStreamEndCapture");
        if (!st) st = e;
    }
    neat_status e = use_stream(d, d->main_stream, what);
    return st ? st : e;
}

} /* extern "C" */
