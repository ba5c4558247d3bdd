/*
 * comm.c — the CUDA backend's collectives on NCCL (built with NEATML_HAVE_NCCL; otherwise
 * every entry answers UNSUPPORTED with the reason).
 *
 * Communicators are non-blocking (ncclConfig_t.blocking = 0), so that nothing waits on a
 * peer without the comm's timeout: init and each enqueue poll ncclCommGetAsyncError until
 * the call has settled, and neat_cmdbuf_wait polls the device's event while it polls the
 * comms of the buffer's collectives (cuda_comm_wait): an asynchronous error, or the comm's
 * timeout passing, aborts those comms (ncclCommAbort makes their kernels return), fails the
 * buffer (BACKEND_ERROR or TIMEOUT) and leaves the comm broken (the core refuses commits of
 * buffers that use it).
 *
 * Collectives are enqueued on d->stream like every op, so a replayed buffer captures them
 * into its CUDA graph. They are neither ops that check the error record (guard.cu) nor
 * guards: after an op that can fail (cross-entropy's labels, the optimizers' hyper), a
 * collective is guarded like any other op, so on that rank it does not run — its peers
 * then see a silent rank and fail at their timeout, rather than reduce half-written data.
 * Inside a guard's conditional body only kernels, memcopies, memsets and conditionals may
 * be captured: NCCL's kernels are kernels, but NCCL may also record host nodes or events
 * during capture (proxy work for network transports); then the capture fails and the buffer
 * falls back to eager enqueue (backend.c; each guard is then one host wait), which is
 * correct, only slower. NEATML_CUDA_GRAPHS=1 reports such a failure at commit instead.
 *
 * AVG is NCCL's ncclAvg: the division happens inside the reduction, so the bucket's
 * unpack is a plain copy (the fused division of the CPU backend's unpack).
 * Several devices in one process (neat_comm_create_all): each device's buffers must be
 * committed from a thread of its own (NCCL's rule for one thread per device without
 * ncclGroupStart around the ranks' calls).
 */
#include "common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef NEATML_HAVE_NCCL
#include <nccl.h>

_Static_assert(sizeof(ncclUniqueId) == sizeof(neat_comm_id), "neat_comm_id holds an ncclUniqueId");

typedef struct cuda_comm {
    ncclComm_t nccl;
    int device; /* CUDA device index */
} cuda_comm;

static ncclComm_t nccl_of(const nm_comm *c) { return ((cuda_comm *)c->impl)->nccl; }

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double timeout_of(nm_comm *comm) {
    double t;
    __atomic_load(&comm->timeout, &t, __ATOMIC_RELAXED);
    return t;
}

static neat_status nccl_error(const char *fn, nm_comm *comm, ncclResult_t r, const char *call) {
    __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
    return nm_error(r == ncclInvalidArgument || r == ncclInvalidUsage ? NEAT_ERR_INVALID_ARGUMENT
                                                                      : NEAT_ERR_BACKEND_ERROR,
                    "%s: rank %d of %d: %s failed: %s (%s)", fn, comm->rank, comm->nranks, call,
                    ncclGetErrorString(r), ncclGetLastError(nccl_of(comm)));
}

/* After a call on a non-blocking comm returned r: wait until it has settled (not
 * ncclInProgress), at most the comm's timeout (then abort: TIMEOUT). */
static neat_status nccl_settle(const char *fn, nm_comm *comm, ncclResult_t r, const char *call) {
    double timeout = timeout_of(comm), deadline = now_s() + timeout;
    while (r == ncclInProgress) {
        if (timeout > 0 && now_s() > deadline) {
            ncclCommAbort(nccl_of(comm));
            ((cuda_comm *)comm->impl)->nccl = NULL;
            __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
            return nm_error(NEAT_ERR_TIMEOUT,
                            "%s: rank %d of %d: %s: the other ranks did not take part within %g s "
                            "(neat_comm_set_timeout); the comm is broken: destroy it",
                            fn, comm->rank, comm->nranks, call, timeout);
        }
        nanosleep(&(struct timespec){0, 100000}, NULL);
        if (ncclCommGetAsyncError(nccl_of(comm), &r) != ncclSuccess) break;
    }
    return r == ncclSuccess ? NEAT_OK : nccl_error(fn, comm, r, call);
}

neat_status cuda_comm_id_create(neat_comm_id *id) {
    ncclUniqueId uid;
    ncclResult_t r = ncclGetUniqueId(&uid);
    if (r != ncclSuccess)
        return nm_error(NEAT_ERR_BACKEND_ERROR, "neat_comm_id_create: ncclGetUniqueId failed: %s",
                        ncclGetErrorString(r));
    memcpy(id->bytes, &uid, sizeof uid);
    return NEAT_OK;
}

/* Start comm's init (inside a group for create_all). */
static neat_status init_start(const char *fn, nm_comm *comm, const neat_comm_id *id,
                              ncclResult_t *r) {
    cuda_comm *c = calloc(1, sizeof *c);
    if (!c) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    c->device = cuda_dev(comm->dev)->index;
    comm->impl = c;
    ncclUniqueId uid;
    memcpy(&uid, id->bytes, sizeof uid);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    cudaSetDevice(c->device);
    *r = ncclCommInitRankConfig(&c->nccl, comm->nranks, uid, comm->rank, &config);
    return NEAT_OK;
}

/* Wait for comm's init; on failure release it. */
static neat_status init_finish(const char *fn, nm_comm *comm, ncclResult_t r) {
    cuda_comm *c = comm->impl;
    neat_status st = r == ncclSuccess || r == ncclInProgress
                         ? NEAT_OK
                         : nccl_error(fn, comm, r, "ncclCommInitRankConfig");
    if (!st && c->nccl) {
        if (r == ncclInProgress || ncclCommGetAsyncError(c->nccl, &r) == ncclSuccess)
            st = nccl_settle(fn, comm, r, "ncclCommInitRankConfig");
    }
    if (st) {
        if (c->nccl) ncclCommAbort(c->nccl);
        free(c);
        comm->impl = NULL;
    }
    return st;
}

neat_status cuda_comm_create(nm_comm *comm, const neat_comm_id *id) {
    ncclResult_t r = ncclInternalError;
    neat_status st = init_start("neat_comm_create", comm, id, &r);
    return st ? st : init_finish("neat_comm_create", comm, r);
}

neat_status cuda_comm_create_all(int n, nm_comm *const *comms) {
    static const char fn[] = "neat_comm_create_all";
    neat_comm_id id;
    neat_status st = cuda_comm_id_create(&id);
    if (st) return st;
    ncclResult_t *rs = calloc((size_t)n, sizeof *rs);
    if (!rs) return nm_error(NEAT_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    /* One thread initialising several ranks: in one group (ncclCommInitAll's way). */
    ncclGroupStart();
    int started = 0;
    for (; started < n && !st; started++) st = init_start(fn, comms[started], &id, &rs[started]);
    ncclResult_t g = ncclGroupEnd();
    for (int i = 0; i < started; i++) {
        if (rs[i] == ncclSuccess && g != ncclSuccess) rs[i] = g;
        neat_status e = comms[i]->impl ? init_finish(fn, comms[i], rs[i]) : NEAT_OK;
        if (!st) st = e;
    }
    if (st)
        for (int i = 0; i < started; i++) cuda_comm_destroy(comms[i]);
    free(rs);
    return st;
}

void cuda_comm_destroy(nm_comm *comm) {
    cuda_comm *c = comm->impl;
    if (!c) return;
    cudaSetDevice(c->device);
    if (c->nccl) {
        /* A broken comm may have work that never ends: abort; otherwise a clean finalize
         * (non-blocking: settled within the timeout, else aborted). */
        if (__atomic_load_n(&comm->broken, __ATOMIC_RELAXED))
            ncclCommAbort(c->nccl);
        else {
            ncclResult_t r = ncclCommFinalize(c->nccl);
            if (r == ncclInProgress || r == ncclSuccess)
                nccl_settle("neat_comm_destroy", comm, r, "ncclCommFinalize");
            if (c->nccl) ncclCommDestroy(c->nccl);
        }
    }
    free(c);
    comm->impl = NULL;
}

/* ---- ops ----------------------------------------------------------------------------------- */

static neat_status ready(const nm_op *op, nm_comm *comm) {
    if (__atomic_load_n(&comm->broken, __ATOMIC_RELAXED) || !nccl_of(comm))
        return nm_error(NEAT_ERR_BACKEND_ERROR,
                        "%s: the comm is broken by an earlier failure (a timeout "
                        "or a peer's error): destroy it",
                        op->fn);
    return NEAT_OK;
}

static neat_status all_reduce(const nm_op *op, nm_comm *comm, neat_reduce_op rop, const void *x,
                              void *y, int64_t count, cudaStream_t s) {
    ncclResult_t r = ncclAllReduce(x, y, (size_t)count, ncclFloat32,
                                   rop == NEAT_REDUCE_AVG ? ncclAvg : ncclSum, nccl_of(comm), s);
    return nccl_settle(op->fn, comm, r, "ncclAllReduce");
}

neat_status cuda_all_reduce(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_args *a = &op->u.all_reduce;
    neat_status st = ready(op, a->comm);
    if (st || a->count == 0) return st;
    return all_reduce(op, a->comm, a->op, a->x->data, a->y->data, a->count, cuda_dev(dev)->stream);
}

neat_status cuda_all_reduce_bucket(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_all_reduce_bucket_args *a = &op->u.all_reduce_bucket;
    neat_status st = ready(op, a->comm);
    if (st || a->total == 0) return st;
    cudaStream_t s = cuda_dev(dev)->stream;
    if (a->contiguous) {
        float *first = NULL;
        for (int i = 0; i < op->nlist && !first; i++) first = op->list[i]->data;
        return all_reduce(op, a->comm, a->op, first, first, a->total, s);
    }
    float *packed;
    st = cuda_scratch(cb, 0, (size_t)a->total * sizeof(float), (void **)&packed);
    int64_t off = 0;
    for (int i = 0; i < op->nlist && !st; i++) {
        const nm_tensor *t = op->list[i];
        if (t->numel)
            st = cuda_check(cudaMemcpyAsync(packed + off, t->data, (size_t)t->numel * sizeof(float),
                                            cudaMemcpyDeviceToDevice, s),
                            op->fn, "cudaMemcpyAsync (pack)");
        off += t->numel;
    }
    if (!st) st = all_reduce(op, a->comm, a->op, packed, packed, a->total, s);
    off = 0;
    for (int i = 0; i < op->nlist && !st; i++) {
        const nm_tensor *t = op->list[i];
        if (t->numel)
            st = cuda_check(cudaMemcpyAsync(t->data, packed + off, (size_t)t->numel * sizeof(float),
                                            cudaMemcpyDeviceToDevice, s),
                            op->fn, "cudaMemcpyAsync (unpack)");
        off += t->numel;
    }
    return st;
}

neat_status cuda_broadcast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    const nm_broadcast_args *a = &op->u.broadcast;
    neat_status st = ready(op, a->comm);
    if (st || a->count == 0) return st;
    ncclResult_t r = ncclBroadcast(a->x ? a->x->data : a->y->data, a->y->data, (size_t)a->count,
                                   ncclFloat32, a->root, nccl_of(a->comm), cuda_dev(dev)->stream);
    return nccl_settle(op->fn, a->comm, r, "ncclBroadcast");
}

/* ---- waiting ------------------------------------------------------------------------------- */

cudaError_t cuda_comm_wait(nm_device *dev, cudaEvent_t ev, nm_cmdbuf *cb) {
    double start = now_s(), aborted = 0;
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e != cudaErrorNotReady) return e;
        /* An aborted comm's kernels return at once; should the stream still not drain,
         * report the device as stuck rather than wait without end. */
        if (aborted > 0 && now_s() - aborted > 30) return cudaErrorTimeout;
        for (int64_t i = 0; i < cb->nops; i++) {
            const nm_op *op = &cb->ops[i];
            if (!(nm_op_flags(op->kind) & NM_OPF_COLLECTIVE)) continue;
            nm_comm *comm = op->kind == NM_OP_ALL_REDUCE  ? op->u.all_reduce.comm
                            : op->kind == NM_OP_BROADCAST ? op->u.broadcast.comm
                                                          : op->u.all_reduce_bucket.comm;
            cuda_comm *c = comm->impl;
            if (!c || !c->nccl) continue;
            ncclResult_t r = ncclSuccess;
            ncclCommGetAsyncError(c->nccl, &r);
            double timeout = timeout_of(comm);
            int late = timeout > 0 && now_s() - start > timeout;
            if ((r == ncclSuccess || r == ncclInProgress) && !late) continue;
            char msg[NM_MSG_MAX];
            if (late)
                snprintf(msg, sizeof msg,
                         "rank %d of %d: the other ranks did not take part within %g s "
                         "(neat_comm_set_timeout); the comm is broken: destroy it",
                         comm->rank, comm->nranks, timeout);
            else
                snprintf(msg, sizeof msg,
                         "rank %d of %d: NCCL failed: %s (%s); the comm is broken: destroy it",
                         comm->rank, comm->nranks, ncclGetErrorString(r),
                         ncclGetLastError(c->nccl));
            __atomic_store_n(&comm->broken, 1, __ATOMIC_RELAXED);
            ncclCommAbort(c->nccl); /* its kernels return: the stream drains */
            c->nccl = NULL;
            aborted = now_s();
            nm_cmdbuf_fail(cb, i, late ? NEAT_ERR_TIMEOUT : NEAT_ERR_BACKEND_ERROR, msg);
        }
        nanosleep(&(struct timespec){0, 50000}, NULL);
    }
}

#else /* no NCCL */

#define NO_NCCL(fn)                                                                                \
    nm_error(NEAT_ERR_UNSUPPORTED,                                                                 \
             "%s: the CUDA backend was built without NCCL (nccl.h, libnccl)", fn)

neat_status cuda_comm_id_create(neat_comm_id *id) { return NO_NCCL("neat_comm_id_create"); }
neat_status cuda_comm_create(nm_comm *comm, const neat_comm_id *id) {
    return NO_NCCL("neat_comm_create");
}
neat_status cuda_comm_create_all(int n, nm_comm *const *comms) {
    return NO_NCCL("neat_comm_create_all");
}
void cuda_comm_destroy(nm_comm *comm) {}
neat_status cuda_all_reduce(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
neat_status cuda_all_reduce_bucket(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
neat_status cuda_broadcast(nm_device *dev, nm_cmdbuf *cb, const nm_op *op) {
    return NO_NCCL(op->fn);
}
cudaError_t cuda_comm_wait(nm_device *dev, cudaEvent_t ev, nm_cmdbuf *cb) {
    return cudaEventSynchronize(ev);
}

#endif
